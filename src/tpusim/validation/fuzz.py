"""Seeded random JAX programs, run by tpusim and by JAX, compared.

Each case builds a small program from a menu of the operations real models use (elementwise and
transcendental math, matmuls and einsums, reductions, reshapes and transposes, slicing,
concatenation and stacking, cumulative sums, sorts, gathers and scatter-adds, pooling, scans,
softmax) on a few random arrays, compiles it for a chip at precision "highest" (six bf16 passes:
f32-accurate, so any difference is a bug, not rounding) and compares the outputs with
`jax.jit`'s. Outcomes: `match`, `mismatch`, `typed` (a TpusimError: a clear refusal) and `crash`
(any other exception: a bug).

    python -m tpusim.validation.fuzz --cases 1000 --seed 0
"""

from __future__ import annotations

import argparse
import math
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from tpusim.errors import TpusimError

Value = tuple[str, tuple[int, ...]]  # (python expression, shape): the program is built as text


@dataclass
class Case:
    seed: int
    source: str
    outcome: str = ""
    detail: str = ""


class _Builder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.lines: list[str] = []
        self.pool: list[Value] = []
        self.count = 0

    def new(self, expr: str, shape: tuple[int, ...]) -> Value:
        name = f"v{self.count}"
        self.count += 1
        self.lines.append(f"    {name} = {expr}")
        value = (name, tuple(shape))
        self.pool.append(value)
        return value

    def pick(self, pred: Callable[[Value], bool] = lambda v: True) -> Value | None:
        choices = [v for v in self.pool if pred(v)]
        return choices[int(self.rng.integers(len(choices)))] if choices else None

    def dim(self) -> int:
        return int(self.rng.choice([1, 2, 3, 4, 5, 8]))


_UNARY = ["jnp.tanh({})", "jnp.sin({})", "jnp.exp(-jnp.abs({}))", "jnp.log1p(jnp.abs({}))", "jnp.sqrt(jnp.abs({}) + 1.0)",
          "jax.nn.relu({})", "-{}", "jnp.abs({})", "{} * {}", "jax.nn.sigmoid({})", "jax.nn.gelu({})",
          "jnp.floor({} * 3.0)", "jnp.clip({}, -0.5, 0.5)", "jax.nn.softplus({})"]
_BINARY = ["{} + {}", "{} - {}", "{} * {}", "jnp.maximum({}, {})", "jnp.minimum({}, {})", "{} / (jnp.abs({}) + 1.0)",
           "jnp.where({} > {}, 1.0, -1.0)", "jnp.arctan2({}, {})"]


def _step(b: _Builder) -> None:
    rng = b.rng
    kind = rng.choice(["unary", "binary", "matmul", "reduce", "reshape", "transpose", "slice", "concat", "stack",
                       "cumsum", "sort", "take", "scatter", "pool", "scan", "softmax", "broadcast", "tile", "argmax",
                       "einsum", "dynamic_slice", "where"])
    v = b.pick()
    assert v is not None
    name, shape = v
    if kind == "unary":
        b.new(rng.choice(_UNARY).format(name, name), shape)
    elif kind == "binary":
        w = b.pick(lambda u: u[1] == shape) or v
        b.new(rng.choice(_BINARY).format(name, w[0]), shape)
    elif kind == "matmul" and len(shape) >= 1:
        k = shape[-1]
        n = b.dim()
        b.new(f"{name} @ w{b.count}", (*shape[:-1], n))
        b.lines.insert(len(b.lines) - 1, f"    w{b.count - 1} = jnp.asarray(np.random.default_rng({rng.integers(1 << 30)})"
                                         f".normal(size=({k}, {n})), jnp.float32)")
    elif kind == "einsum" and len(shape) == 2:
        w = b.pick(lambda u: len(u[1]) == 2 and u[1][0] == shape[0])
        if w is not None:
            b.new(f"jnp.einsum('ij,ik->jk', {name}, {w[0]})", (shape[1], w[1][1]))
    elif kind == "reduce" and len(shape) >= 1:
        axis = int(rng.integers(len(shape)))
        fn = rng.choice(["jnp.sum", "jnp.max", "jnp.mean", "jnp.min"])
        b.new(f"{fn}({name}, axis={axis})", shape[:axis] + shape[axis + 1:])
    elif kind == "reshape" and len(shape) >= 2:
        b.new(f"{name}.reshape({(shape[0] * shape[1], *shape[2:])})", (shape[0] * shape[1], *shape[2:]))
    elif kind == "transpose" and len(shape) >= 2:
        perm = tuple(int(i) for i in rng.permutation(len(shape)))
        b.new(f"jnp.transpose({name}, {perm})", tuple(shape[i] for i in perm))
    elif kind == "slice" and len(shape) >= 1 and shape[0] > 1:
        b.new(f"{name}[1:]", (shape[0] - 1, *shape[1:]))
    elif kind == "concat":
        w = b.pick(lambda u: u[1][1:] == shape[1:] and len(u[1]) == len(shape) and len(shape) >= 1)
        if w is not None:
            b.new(f"jnp.concatenate([{name}, {w[0]}], axis=0)", (shape[0] + w[1][0], *shape[1:]))
    elif kind == "stack":
        w = b.pick(lambda u: u[1] == shape) or v
        axis = int(rng.integers(len(shape) + 1))
        b.new(f"jnp.stack([{name}, {w[0]}], axis={axis})", _insert(shape, 2, axis))
    elif kind == "tile" and len(shape) >= 1:
        b.new(f"jnp.tile({name}, {(2,) + (1,) * (len(shape) - 1)})", (2 * shape[0], *shape[1:]))
    elif kind == "cumsum" and len(shape) >= 1:
        b.new(f"jnp.cumsum({name}, axis=0)", shape)
    elif kind == "sort" and len(shape) >= 1:
        b.new(f"jnp.sort({name}, axis=-1)", shape)
    elif kind == "argmax" and len(shape) >= 1:
        b.new(f"jnp.argmax({name}, axis=-1).astype(jnp.float32)", shape[:-1])
    elif kind == "take" and len(shape) >= 1:
        idx = [int(i) for i in rng.integers(0, shape[0], size=3)]
        b.new(f"jnp.take({name}, jnp.array({idx}), axis=0)", (3, *shape[1:]))
    elif kind == "scatter" and len(shape) >= 1:
        idx = [int(i) for i in rng.integers(0, shape[0], size=2)]
        b.new(f"{name}.at[jnp.array({idx})].add(1.5)", shape)
    elif kind == "pool" and len(shape) == 4 and shape[1] >= 2 and shape[2] >= 2:
        b.new(f"jax.lax.reduce_window({name}, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), 'VALID')",
              (shape[0], shape[1] // 2, shape[2] // 2, shape[3]))
    elif kind == "scan" and len(shape) >= 2:
        b.new(f"jax.lax.scan(lambda c, x: (c * 0.5 + x, c), jnp.zeros({shape[1:]}), {name})[1]", shape)
    elif kind == "softmax" and len(shape) >= 1:
        b.new(f"jax.nn.softmax({name}, axis=-1)", shape)
    elif kind == "broadcast":
        b.new(f"jnp.broadcast_to({name}, {(2, *shape)})", (2, *shape))
    elif kind == "dynamic_slice" and len(shape) >= 1 and shape[0] > 1:
        b.new(f"jax.lax.dynamic_slice_in_dim({name}, 1, {shape[0] - 1}, axis=0)", (shape[0] - 1, *shape[1:]))
    elif kind == "where":
        b.new(f"jnp.where({name} > 0, {name}, 0.1 * {name})", shape)


def _insert(shape: tuple[int, ...], size: int, at: int) -> tuple[int, ...]:
    return shape[:at] + (size,) + shape[at:]


def make_case(seed: int, steps: int = 6) -> tuple[str, list[np.ndarray]]:
    """(source of `def f(*args)`, its random arguments) for a seed."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng)
    n_args = int(rng.integers(1, 3))
    args, params = [], []
    for i in range(n_args):
        shape = tuple(b.dim() for _ in range(int(rng.integers(1, 5))))
        args.append(rng.normal(size=shape).astype(np.float32))
        params.append(f"a{i}")
        b.pool.append((f"a{i}", shape))
    for _ in range(steps):
        _step(b)
        if any(math.prod(s) > 4096 for _, s in b.pool):  # keep programs small
            b.pool = [(n, s) for n, s in b.pool if math.prod(s) <= 4096]
            if not b.pool:
                b.pool.append(("a0", args[0].shape))
    out = b.pool[-1][0]
    source = "def f({}):\n{}\n    return {}\n".format(", ".join(params), "\n".join(b.lines), out)
    return source, args


def run_case(seed: int, device: str = "v5e") -> Case:
    import tpusim

    source, args = make_case(seed)
    case = Case(seed, source)
    scope: dict[str, Any] = {"jax": jax, "jnp": jnp, "np": np}
    try:
        exec(source, scope)  # noqa: S102 - the program is generated here, from a seed
        ref = np.asarray(jax.jit(scope["f"])(*args))
    except Exception as e:  # the generator made something JAX refuses: not a tpusim case
        case.outcome, case.detail = "invalid", f"{type(e).__name__}: {e}"
        return case
    try:
        got = np.asarray(tpusim.compile(scope["f"], *args, device=device, precision="highest").run(*args))
    except TpusimError as e:
        case.outcome, case.detail = "typed", f"{type(e).__name__}: {e}"
        return case
    except Exception as e:
        case.outcome, case.detail = "crash", "".join(traceback.format_exception_only(type(e), e)).strip()
        return case
    scale = max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
    if got.shape != ref.shape or not np.allclose(got, ref, rtol=1e-3, atol=1e-3 * scale, equal_nan=True):
        err = float(np.max(np.abs(got - ref))) if got.shape == ref.shape else float("nan")
        case.outcome, case.detail = "mismatch", f"shape {got.shape} vs {ref.shape}, max |error| {err:.3g}"
    else:
        case.outcome = "match"
    return case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="v5e")
    opts = parser.parse_args()
    counts: dict[str, int] = {}
    for seed in range(opts.seed, opts.seed + opts.cases):
        case = run_case(seed, opts.device)
        counts[case.outcome] = counts.get(case.outcome, 0) + 1
        if case.outcome in ("crash", "mismatch"):
            print(f"seed {seed}: {case.outcome}: {case.detail}\n{case.source}")
    print(counts)


if __name__ == "__main__":
    main()
