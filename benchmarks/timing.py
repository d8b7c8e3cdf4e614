"""Timing-model speed: compile + estimate wall time, and the MXU models on big GEMMs.

Run: python benchmarks/timing.py [--full]   (prints a table; --full also runs the PE model on
the 4096^3 GEMM in full, which takes several minutes; by default it runs 1/64 of its folds and
scales the wall time, labelled as such)
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import tpusim  # noqa: E402
from tpusim.models import bert_base_shapes, resnet50  # noqa: E402
from tpusim.sim.mxu_timing import ws_cycles  # noqa: E402
from tpusim.sim.systolic import simulate_systolic  # noqa: E402


def timed(fn, repeat: int = 3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def main(full: bool) -> None:
    table = Table(title="tpusim timing model: wall time on this machine (best of 3)")
    for col in ("case", "device", "result", "wall time", "note"):
        table.add_column(col, justify="right" if col == "wall time" else "left")

    resnet = resnet50()
    x = jax.ShapeDtypeStruct((128, 224, 224, 3), jnp.float32)
    tpusim.compile(resnet, x, device="v4")  # warm JAX's tracing caches
    est, secs = timed(lambda: tpusim.compile(resnet, x, device="v4").estimate())
    table.add_row("ResNet-50 fwd, batch 128: compile + estimate", "v4", f"{est.time_s * 1e3:.2f} ms step, MXU {est.mxu_utilization:.0%}",
                  f"{secs:.3f} s", "target < 2 s")

    fn, args = bert_base_shapes(batch=8, seq=128)
    tpusim.compile(fn, *args, device="v4")
    est, secs = timed(lambda: tpusim.compile(fn, *args, device="v4").estimate())
    table.add_row("BERT-base fwd (12 layers), 8 x 128: compile + estimate", "v4",
                  f"{est.time_s * 1e3:.2f} ms step, MXU {est.mxu_utilization:.0%}", f"{secs:.3f} s", "")

    for n in (1024, 4096):
        cycles, secs = timed(lambda: ws_cycles(n, n, n, 128, 128), repeat=5)
        table.add_row(f"GEMM {n}^3, block formula", "128x128 WS", f"{cycles:,} cycles", f"{secs * 1e6:.1f} us", "one array")
        rng = np.random.default_rng(0)
        if n == 1024 or full:
            a, w = rng.normal(size=(n, n)).astype(np.float32), rng.normal(size=(n, n)).astype(np.float32)
            run, secs = timed(lambda: simulate_systolic(a, w, 128, 128), repeat=1)
            table.add_row(f"GEMM {n}^3, PE model", "128x128 WS", f"{run.cycles:,} cycles", f"{secs:.2f} s", "cycle by cycle")
        else:
            part = n // 8  # 1/64 of the folds: K and N cut by 8, all M rows streamed
            a, w = rng.normal(size=(n, part)).astype(np.float32), rng.normal(size=(part, part)).astype(np.float32)
            run, secs = timed(lambda: simulate_systolic(a, w, 128, 128), repeat=1)
            table.add_row(f"GEMM {n}^3, PE model", "128x128 WS", f"{run.cycles:,} cycles for 1/64 of the folds",
                          f"~{secs * 64:.0f} s", f"extrapolated from {secs:.1f} s (--full runs it)")
    Console(width=200).print(table)


if __name__ == "__main__":
    main("--full" in sys.argv)
