"""tpusim's numerics (one staged program per model) against jax.jit on this CPU.

For each model: jax.jit's first call (compile + run) and steady-state call, tpusim's first
`run()` (stage + XLA compile + run; tpusim.compile itself is listed apart) and steady-state
`run()`, and the ratios. Targets (issue 16): first run and steady state within 2x of jax.jit,
median over the set.

Run: python benchmarks/numerics_speed.py   [--quick: smaller shapes]
"""

from __future__ import annotations

import os
import sys
import time
from statistics import median
from typing import Any, Callable

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import tpusim  # noqa: E402
from tpusim.models import zoo  # noqa: E402


def _keras_forward(model: Any, x: np.ndarray) -> tuple[Callable, tuple]:
    params = [v.value for v in model.trainable_variables]
    others = [v.value for v in model.non_trainable_variables]

    def fwd(params: list, others: list, x: jax.Array) -> jax.Array:
        return model.stateless_call(params, others, x)[0]

    return fwd, (params, others, x)


def _concrete(tree: Any, seed: int = 0) -> Any:
    """Random arrays for a tree of ShapeDtypeStructs (ints become small token ids)."""
    rng = np.random.default_rng(seed)

    def make(s: Any) -> Any:
        if not isinstance(s, jax.ShapeDtypeStruct):
            return s
        if jnp.issubdtype(s.dtype, jnp.integer):
            return rng.integers(0, 100, s.shape).astype(s.dtype)
        return (rng.standard_normal(s.shape) * 0.02).astype(s.dtype)

    return jax.tree.map(make, tree)


def models(quick: bool) -> list[tuple[str, Callable, tuple]]:
    out = []
    cnn = zoo.classic_cnn()
    out.append(("classic CNN forward, batch 128", *_keras_forward(cnn, np.zeros((128, 28, 28, 1), np.float32))))
    lstm = zoo.lstm_text_model()
    out.append(("LSTM text model forward, batch 64", *_keras_forward(lstm, np.ones((64, 20), np.int32))))
    size = 64 if quick else 224
    r50 = zoo.resnet50((size, size, 3))
    out.append((f"ResNet-50 forward, batch 2 at {size}", *_keras_forward(r50, np.zeros((2, size, size, 3), np.float32))))
    layers = 2 if quick else 12
    bert, bert_args = zoo.bert_base_shapes(batch=2, seq=128, layers=layers)
    out.append((f"BERT-base-shaped encoder ({layers} layers), batch 2 x 128", bert, _concrete(bert_args)))
    step, step_args = zoo.gpt_train_step_shapes(layers=2 if quick else 4, d_model=256, heads=4, seq=128, batch=4,
                                                vocab=1024)
    out.append(("GPT decoder Adam training step (d256, T128, batch 4)", step, _concrete(step_args)))
    return out


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t


def steady(fn: Callable[[], Any], n: int = 5) -> float:
    return min(timed(fn) for _ in range(n))


def main() -> None:
    quick = "--quick" in sys.argv
    table = Table(title="numerics: tpusim run() vs jax.jit on this CPU (steady state: best of 5)")
    for col in ("model", "jax.jit first", "tpusim compile", "tpusim first run", "first / jit",
                "jax.jit steady", "tpusim steady", "steady / jit"):
        table.add_column(col, justify="left" if col == "model" else "right")
    firsts, steadies = [], []
    for name, fn, args in models(quick):
        jitted = jax.jit(fn)
        jit_first = timed(lambda: jitted(*args))
        jit_steady = steady(lambda: jitted(*args))
        t = time.perf_counter()
        compiled = tpusim.compile(fn, *args, device="v5e", check_memory=False)
        compile_s = time.perf_counter() - t
        sim_first = timed(lambda: compiled.run(*args))
        sim_steady = steady(lambda: compiled.run(*args))
        firsts.append(sim_first / jit_first)
        steadies.append(sim_steady / jit_steady)
        table.add_row(name, f"{jit_first:.2f} s", f"{compile_s:.2f} s", f"{sim_first:.2f} s", f"{firsts[-1]:.2f}x",
                      f"{jit_steady * 1e3:.1f} ms", f"{sim_steady * 1e3:.1f} ms", f"{steadies[-1]:.2f}x")
    table.add_row("median", "", "", "", f"{median(firsts):.2f}x", "", "", f"{median(steadies):.2f}x")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
