"""Compile and run time, and numerics error against JAX, for the core issue's models.

Run: python benchmarks/core_models.py   (prints a table; takes about a minute on 2 cores)
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
os.environ.setdefault("KERAS_BACKEND", "jax")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import tpusim  # noqa: E402
from tpusim.reference import bf16_reference, relative_error  # noqa: E402


def main() -> None:
    from test_models import CASES  # the same models and inputs as the tests

    table = Table(title="tpusim core: compile/run time (this machine) and error vs JAX")
    for col in ("model", "kernels", "GFLOP", "peak HBM MiB", "compile s", "first run s", "run s",
                "err vs bf16-JAX", "err vs f32 (default)", "err vs f32 (highest)"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, make in CASES.items():
        fn, args, ref_f32 = make()
        t = time.perf_counter()
        compiled = tpusim.compile(fn, *args, device="v4")
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        out = compiled.run(*args)
        first_s = time.perf_counter() - t
        t = time.perf_counter()
        out = compiled.run(*args)
        run_s = time.perf_counter() - t
        hi = tpusim.compile(fn, *args, device="v4", precision="highest").run(*args)
        table.add_row(name, str(len(compiled.kernels)), f"{compiled.counts().flops / 1e9:.3f}",
                      f"{compiled.peak_hbm_bytes / 2**20:.1f}", f"{compile_s:.3f}", f"{first_s:.2f}", f"{run_s:.2f}",
                      f"{relative_error(out, bf16_reference(fn, *args)):.1e}", f"{relative_error(out, ref_f32):.1e}",
                      f"{relative_error(hi, ref_f32):.1e}")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
