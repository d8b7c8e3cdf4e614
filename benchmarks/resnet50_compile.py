"""ResNet-50 (Keras) on a simulated TPU v4: compile + estimate time on this machine, and the
estimate itself, for inference (batch 128) and one SGD training step (batch 128, f32 and
Keras's mixed_bfloat16 policy, as TPU training runs use).

Run: python benchmarks/resnet50_compile.py   (target: inference compile+estimate <= 1 s)
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import tpusim  # noqa: E402
from tpusim.models import resnet50  # noqa: E402
from tpusim.validation.memory_programs import _keras_train, _resnet50  # noqa: E402


def timed(build) -> tuple[float, float, object]:
    """(first call s, best of 3 later calls s, estimate) of compile + estimate."""
    times = []
    for _ in range(4):
        t = time.perf_counter()
        compiled = build()
        est = compiled.estimate()
        times.append(time.perf_counter() - t)
    return times[0], min(times[1:]), (compiled, est)


def main() -> None:
    model = resnet50()
    x = jax.ShapeDtypeStruct((128, 224, 224, 3), np.float32)
    train = _keras_train("resnet50", _resnet50, 128, "sgd")()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    train_bf16 = _keras_train("resnet50", _resnet50, 128, "sgd")()
    keras.mixed_precision.set_global_policy("float32")
    rows = [
        ("forward, batch 128", lambda: tpusim.compile(model, x, device="v4"), 128),
        ("SGD training step, batch 128, f32", lambda: tpusim.compile(train.fn, *train.args, device="v4",
                                                                     donate_argnums=train.donate_argnums), 128),
        ("SGD training step, batch 128, mixed_bfloat16",
         lambda: tpusim.compile(train_bf16.fn, *train_bf16.args, device="v4", donate_argnums=train_bf16.donate_argnums), 128),
    ]
    table = Table(title="ResNet-50 on a simulated TPU v4 (compile + estimate on this machine)")
    for col in ("workload", "first s", "warm s", "target", "estimated step", "images/s", "peak HBM", "MXU util"):
        table.add_column(col, justify="left" if col == "workload" else "right")
    for name, build, batch in rows:
        first, warm, (compiled, est) = timed(build)
        target = "<= 1 s" if name.startswith("forward") else ""
        table.add_row(name, f"{first:.2f}", f"{warm:.2f}", target, f"{est.time_s * 1e3:.1f} ms",
                      f"{batch / est.time_s:,.0f}", f"{est.peak_hbm_bytes / 2**30:.2f} GiB",
                      f"{est.mxu_flops / est.time_s / est.peak_flops:.0%}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
