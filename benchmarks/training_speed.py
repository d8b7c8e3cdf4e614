"""The classic CNN on the CPU: one training step (batch 128), tpusim's staged numerics vs
jax.jit, and an epoch of `tpusim.keras.fit` vs Keras's own `fit` on the digits data.

Run: python benchmarks/training_speed.py   (targets: the step within 2x of jax.jit; a fit
epoch within 2x of Keras's)
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import tpusim.keras  # noqa: E402
from tpusim.cost import step_cost  # noqa: E402
from tpusim.datasets import digits  # noqa: E402
from tpusim.keras.training import _state  # noqa: E402
from tpusim.models import classic_cnn  # noqa: E402


def best_of(fn, n: int = 10) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _fit_epochs(x, y, epochs: int = 2) -> tuple[list[float], list[float]]:
    """Seconds per epoch of Keras's fit and of tpusim.keras.fit (fresh models, same data)."""
    times: tuple[list[float], list[float]] = ([], [])
    for which in (0, 1):
        model = classic_cnn()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        for _ in range(epochs):
            t = time.perf_counter()
            if which == 0:
                model.fit(x, y, epochs=1, batch_size=64, verbose=0)
            else:
                tpusim.keras.fit(model, x, y, epochs=1, batch_size=64, device="v5e", verbose=0)
            times[which].append(time.perf_counter() - t)
    return times


def main() -> None:
    x, y = digits()
    bx, by = x[:128], y[:128]
    model = classic_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t = time.perf_counter()
    step = tpusim.keras.training_step(model, bx, by, "v4")
    compile_s = time.perf_counter() - t
    state = _state(model)
    t = time.perf_counter()
    step.run(state, (bx, by))  # the first run stages the program and XLA compiles it
    first_s = time.perf_counter() - t
    tpusim_s = best_of(lambda: step.run(state, (bx, by)))
    jitted = jax.jit(lambda s, d: model.train_step(s, d))
    jax.block_until_ready(jitted(state, (bx, by)))
    jax_s = best_of(lambda: jax.block_until_ready(jitted(state, (bx, by))))
    table = Table(title="classic CNN, one Adam training step, batch 128 (this machine, best of 10)")
    for col in ("what", "time", "note"):
        table.add_column(col)
    table.add_row("jax.jit on the CPU (f32)", f"{jax_s * 1e3:.1f} ms", "reference")
    table.add_row("tpusim staged numerics", f"{tpusim_s * 1e3:.1f} ms", f"{tpusim_s / jax_s:.2f}x jax.jit (target <= 2x)")
    table.add_row("tpusim compile (trace -> program)", f"{compile_s * 1e3:.0f} ms", "once")
    table.add_row("tpusim first run", f"{first_s * 1e3:.0f} ms", "stages the program and compiles it once")
    keras_s, fit_s = _fit_epochs(x, y)
    for i, (k, f) in enumerate(zip(keras_s, fit_s)):
        table.add_row(f"fit epoch {i + 1}, batch 64: tpusim.keras.fit", f"{f:.2f} s",
                      f"Keras fit {k:.2f} s: {f / k:.2f}x (target <= 2x)")
    for dev in ("v4", "v5e", "v6e"):
        c = step_cost(tpusim.keras.training_step(model, bx, by, dev), dataset_size=60000, batch_size=128)
        table.add_row(f"estimated step on {dev}", f"{c.step_time_s * 1e3:.3f} ms", c.describe())
    Console(width=220).print(table)


if __name__ == "__main__":
    main()
