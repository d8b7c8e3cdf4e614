"""Evaluate, at compile time, a value that depends only on constants and iotas: an attention
mask built from positions (causal, sliding window, prefix) is known before the program runs,
so the compiler can tell which blocks of scores a flash kernel never needs to compute.

Values are kept broadcast-compact: an array of the value's rank whose axes are either the full
size or 1 where the value does not vary (an iota over axis 0 of [T, T] is [T, 1]), so a mask
over [batch, heads, T, T] costs no more than its [T, T] pattern. Anything else — an input, an op
without a rule here, a result above `limit` elements — is "not static" (None).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from tpusim.ir.graph import Op, Value

_ELEMENTWISE: dict[str, Callable[..., np.ndarray]] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "max": np.maximum, "min": np.minimum,
    "neg": np.negative, "not": lambda x: np.logical_not(x) if x.dtype == bool else np.invert(x),
    "and": lambda a, b: np.logical_and(a, b) if a.dtype == bool else np.bitwise_and(a, b),
    "or": lambda a, b: np.logical_or(a, b) if a.dtype == bool else np.bitwise_or(a, b),
    "ge": np.greater_equal, "gt": np.greater, "le": np.less_equal, "lt": np.less, "eq": np.equal, "ne": np.not_equal,
    "rem": np.fmod,  # lax.rem takes the dividend's sign, as C's fmod
    "abs": np.abs,
}


def static_value(v: Value, producer: dict[int, Op], limit: int = 1 << 26) -> np.ndarray | None:
    """`v` as a broadcast-compact array, or None where it is not known at compile time."""
    memo: dict[int, np.ndarray | None] = {}
    return _eval(v, producer, limit, memo)


def _eval(v: Value, producer: dict[int, Op], limit: int, memo: dict[int, np.ndarray | None]) -> np.ndarray | None:
    if v.id in memo:
        return memo[v.id]
    memo[v.id] = None  # a cycle (it cannot happen in SSA) stays unknown
    if v.is_const:
        c = np.asarray(v.const)
        out = c.reshape(v.shape) if c.size == v.size else c.reshape((1,) * len(v.shape)) if c.size == 1 else None
    else:
        op = producer.get(v.id)
        out = None if op is None or len(op.outputs) != 1 else _apply(op, producer, limit, memo)
    if out is not None and (out.ndim != len(v.shape) or out.size > limit
                            or any(c not in (1, d) for c, d in zip(out.shape, v.shape))):
        out = None
    memo[v.id] = out
    return out


def _apply(op: Op, producer: dict[int, Op], limit: int, memo: dict) -> np.ndarray | None:
    p, out_v = op.params, op.outputs[0]
    if op.prim == "iota":
        dim, n = int(p["dimension"]), out_v.shape[int(p["dimension"])]
        shape = [1] * len(out_v.shape)
        shape[dim] = n
        return np.arange(n, dtype=out_v.dtype).reshape(shape)
    args = [_eval(x, producer, limit, memo) for x in op.inputs]
    if any(a is None for a in args):
        return None
    if op.prim in _ELEMENTWISE or op.prim == "select_n":
        shape = np.broadcast_shapes(*(a.shape for a in args))
        if math.prod(shape) > limit:
            return None
        if op.prim == "select_n":  # select_n(which, *cases): case `which` (False/True: 0/1)
            cases = [np.broadcast_to(c, shape) for c in args[1:]]
            return np.choose(np.broadcast_to(args[0], shape).astype(np.int32), cases).astype(out_v.dtype)
        return np.asarray(_ELEMENTWISE[op.prim](*args)).astype(out_v.dtype)
    if op.prim == "convert_element_type":
        return args[0].astype(out_v.dtype)
    if op.prim == "broadcast_in_dim":
        shape = [1] * len(out_v.shape)
        for i, d in enumerate(p["broadcast_dimensions"]):
            shape[d] = args[0].shape[i]
        return args[0].reshape(shape)
    if op.prim == "transpose":
        return np.transpose(args[0], p["permutation"])
    if op.prim in ("reshape", "squeeze"):
        return _reshape(args[0], op.inputs[0].shape, out_v.shape, limit)
    return None


def _reshape(x: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...], limit: int) -> np.ndarray | None:
    """A reshape of a compact array: only size-1 axes added or dropped keeps it compact;
    otherwise it is materialized (within `limit`)."""
    kept_in = [i for i, d in enumerate(in_shape) if d != 1]
    kept_out = [i for i, d in enumerate(out_shape) if d != 1]
    if [in_shape[i] for i in kept_in] == [out_shape[i] for i in kept_out]:
        shape = [1] * len(out_shape)
        for i, o in zip(kept_in, kept_out):
            shape[o] = x.shape[i]
        return x.reshape(shape)
    if math.prod(in_shape) > limit:
        return None
    return np.broadcast_to(x, in_shape).reshape(out_shape)
