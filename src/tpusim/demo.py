"""`tpusim demo`: the classic CNN compiled for a simulated TPU v4, run, and checked against JAX."""

from __future__ import annotations

import time

import numpy as np
from rich.console import Console

from tpusim.api import compile as tpu_compile
from tpusim.report.tables import kernels_table, summary_table


def run_demo(device: str = "v4", batch: int = 32, console: Console | None = None) -> dict[str, float]:
    from tpusim.models import classic_cnn
    from tpusim.reference import bf16_reference, relative_error

    console = console or Console()
    console.rule(f"[bold]tpusim demo: the classic Keras CNN on a simulated {device}")
    with console.status("building the Keras model (Conv2D 32/64/64, MaxPooling, Dense 64, Dense 10)..."):
        model = classic_cnn()
        x = np.random.default_rng(0).normal(size=(batch, 28, 28, 1)).astype(np.float32)
    with console.status(f"compiling for {device}: trace -> IR -> fuse -> precision -> tile -> allocate..."):
        compiled = tpu_compile(model, x, device=device)
    console.print(f"compiled in {compiled.compile_seconds * 1e3:.0f} ms "
                  f"({', '.join(f'{k} {v * 1e3:.0f} ms' for k, v in compiled.timings.items())})")
    console.print(kernels_table(compiled))
    with console.status("running the compiled program as one staged XLA function (bf16 MXU, f32 accumulate)..."):
        t = time.perf_counter()
        out = compiled.run(x)
        run_s = time.perf_counter() - t
    with console.status("computing JAX references (f32, and bf16-rounded MXU inputs)..."):
        ref_f32 = np.asarray(model(x, training=False))
        ref_bf16 = bf16_reference(model, x)
    err_f32 = relative_error(out, ref_f32)
    int8 = compiled.chip.mxu_dtype == "int8"
    # An int8 MXU (TPU v1) quantizes instead of rounding to bf16: judge it against float32.
    err_bf16 = err_f32 if int8 else relative_error(out, ref_bf16)
    tolerance = 5e-2 if int8 else 1e-3
    agree = float(np.mean(np.argmax(out, -1) == np.argmax(ref_f32, -1)))
    console.print(summary_table(compiled))
    console.rule("numerics check against JAX")
    console.print(f"run time (staging, XLA compile and run): {run_s:.2f} s for batch {batch}")
    if int8:
        console.print(f"int8 MXU (symmetric per-tensor activations, per-column weights, int32 accumulation): "
                      f"error vs float32 {err_f32:.2e} ({'OK' if err_f32 < tolerance else 'FAIL'}: tolerance {tolerance:g})")
    else:
        console.print(f"relative error vs JAX with bf16-rounded MXU inputs: {err_bf16:.2e}  "
                      f"({'OK' if err_bf16 < tolerance else 'FAIL'}: tolerance {tolerance:g})")
    if not int8:
        console.print(f"relative error vs plain float32 JAX:               {err_f32:.2e}  "
                      f"(bf16 rounding of each input: up to 2^-8 = 3.9e-03 relative)")
    console.print(f"predicted classes agreeing with float32 JAX:       {agree:.1%}")
    est = compiled.estimate()
    console.print(f"estimated on {compiled.chip.display_name}: {est.time_s * 1e6:.1f} us per batch, "
                  f"{est.tflops:.2f} TFLOP/s, MXU utilization {est.mxu_utilization:.1%} (see `tpusim run` for the breakdown)")
    return {"err_bf16": err_bf16, "err_f32": err_f32, "run_s": run_s, "agree": agree, "ok": err_bf16 < tolerance}
