"""One model on six devices: tracing and lowering once (`tpusim.jit(f).lower(...)`, shared by
every `Lowered.compile(device)`, as `tpusim.compare` does) against a full `tpusim.compile` per
device. The estimates must be the same; only the time on this machine differs.

Run: python benchmarks/compare_stages.py   (ResNet-50 inference, batch 32, Keras)
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import tpusim  # noqa: E402
from tpusim.models import resnet50  # noqa: E402

DEVICES = ("v4", "v5e", "v5p", "v6e", "h100", "a100")


def main() -> None:
    model = resnet50()
    x = jax.ShapeDtypeStruct((32, 224, 224, 3), np.float32)
    tpusim.compile(model, x, device="v5e")  # warm JAX's caches for both paths

    t = time.perf_counter()
    separate = {d: tpusim.compile(model, x, device=d).estimate().time_s for d in DEVICES}
    t_separate = time.perf_counter() - t

    t = time.perf_counter()
    lowered = tpusim.jit(model).lower(x)
    t_lower = time.perf_counter() - t
    shared = {d: lowered.compile(d).estimate().time_s for d in DEVICES}
    t_shared = time.perf_counter() - t

    table = Table(title=f"ResNet-50 b32 on {len(DEVICES)} devices: compile + estimate on this machine")
    for col in ("path", "trace + lower", "total s", "estimates equal"):
        table.add_column(col)
    same = all(separate[d] == shared[d] for d in DEVICES)
    table.add_row("tpusim.compile per device", f"{len(DEVICES)} times", f"{t_separate:.2f}", "")
    table.add_row("jit(f).lower() once, compile per device", f"once ({t_lower:.2f} s)", f"{t_shared:.2f}",
                  "yes" if same else "NO")
    Console().print(table)
    if not same:
        raise SystemExit("the shared lowering changed an estimate")


if __name__ == "__main__":
    main()
