"""Pods: scaling tables for ResNet-50 (data parallel) and a GPT-style model (FSDP x tensor
parallel) on v4, the GPT-3 175B step on 4096 v4 chips, a 7B-shaped LM step on 8192 v5p chips,
and on 1024 v5p chips a Mixtral 8x7B-shaped expert-parallel step and a GPipe-pipelined LM step
(both written with jax.shard_map), with tpusim's wall time.

Run: python benchmarks/pods.py
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import tpusim  # noqa: E402
from tpusim.distribute.scaling import scaling_curve  # noqa: E402
from tpusim.models.parallel import moe_train_step_shapes, pipeline_train_step_shapes  # noqa: E402
from tpusim.models.zoo import gpt_specs, gpt_train_step_shapes  # noqa: E402


def main() -> None:
    console = Console(width=200)
    for model, unit in (("resnet50", "images/s"), ("gpt", "tokens/s")):
        points = scaling_curve(model, "v4", [1, 8, 64, 512, 4096])
        t = Table(title=f"{model} training step on TPU v4 (weak scaling)")
        for col in ("chips", "slice", "global batch", "step", f"throughput ({unit})", "efficiency", "communication",
                    "exposed", "tpusim wall"):
            t.add_column(col, justify="right")
        for p in points:
            t.add_row(str(p.chips), p.system, str(p.global_batch), f"{p.step_s * 1e3:.1f} ms", f"{p.throughput:,.0f}",
                      f"{p.efficiency:.0%}", f"{p.communication_s * 1e3:.1f} ms", f"{p.exposed_communication_s * 1e3:.1f} ms",
                      f"{p.wall_s:.2f} s")
        console.print(t)
    t0 = time.perf_counter()
    fn, args = gpt_train_step_shapes(layers=96, d_model=12288, heads=96, seq=2048, batch=2048, vocab=51200)
    c = tpusim.compile(fn, *args, device="v4-8192", mesh={"data": 4, "fsdp": 256, "model": 4}, in_specs=gpt_specs(args[0]))
    est = c.estimate()
    wall = time.perf_counter() - t0
    mfu = 6 * 175e9 * 2048 * 2048 / 4096 / est.time_s / 275e12
    console.print(f"GPT-3 175B (96 layers, d_model 12288, seq 2048, 2048 sequences) on v4-8192 (4096 chips, mesh data 4 x "
                  f"fsdp 256 x model 4, remat): step {est.time_s:.2f} s, MFU (6ND) {mfu:.1%}, communication "
                  f"{est.communication_s:.2f} s ({est.exposed_communication_s:.2f} s exposed), peak HBM "
                  f"{est.peak_hbm_bytes / 2**30:.1f} GiB per chip; simulated in {wall:.2f} s (target <= 10 s)")
    t0 = time.perf_counter()
    fn, args = gpt_train_step_shapes(layers=32, d_model=4096, heads=32, seq=2048, batch=16384, vocab=32000)
    c = tpusim.compile(fn, *args, device="v5p-16384", mesh={"data": 32, "fsdp": 64, "model": 4},
                       in_specs=gpt_specs(args[0], data_axes=("data", "fsdp")))
    est = c.estimate()
    console.print(f"7B-shaped LM (32 layers, d_model 4096, seq 2048, 16384 sequences) on v5p-16384 (8192 chips, mesh "
                  f"data 32 x fsdp 64 x model 4, remat): step {est.time_s:.2f} s, communication "
                  f"{est.communication_s:.2f} s ({est.exposed_communication_s:.2f} s exposed); simulated in "
                  f"{time.perf_counter() - t0:.2f} s (target <= 2 s)")
    t = Table(title="Model parallelism written with shard_map, on v5p-2048 (1024 chips)")
    for col in ("step", "mesh", "time", "communication", "exposed", "peak HBM / chip", "tpusim wall"):
        t.add_column(col, justify="right")
    for name, (fn, args, specs), mesh in [
            ("Mixtral 8x7B-shaped, expert parallel (all-to-all), 1024 x 4096 tokens",
             moe_train_step_shapes(batch=1024), {"data": 128, "expert": 8}),
            ("GPipe LM 6.4B (4 stages x 8 layers, 16 microbatches of 256 x 2048 tokens)",
             pipeline_train_step_shapes(microbatches=16, microbatch=256), {"data": 256, "stage": 4})]:
        t0 = time.perf_counter()
        est = tpusim.compile(fn, *args, device="v5p-2048", mesh=mesh, in_specs=specs, donate_argnums=(0, 1)).estimate()
        t.add_row(name, " x ".join(f"{k} {v}" for k, v in mesh.items()), f"{est.time_s:.2f} s",
                  f"{est.communication_s:.2f} s", f"{est.exposed_communication_s:.2f} s",
                  f"{est.peak_hbm_bytes / 2**30:.1f} GiB", f"{time.perf_counter() - t0:.2f} s")
    console.print(t)


if __name__ == "__main__":
    main()
