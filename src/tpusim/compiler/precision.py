"""Precision pass: decide how each matrix-unit op is computed.

The MXU multiplies bf16 and accumulates in f32. Like XLA on TPU:
- default: float inputs are rounded to bf16 (one pass), unless the op itself asked for
  Precision.HIGH/HIGHEST;
- "high": f32 emulated with 3 bf16 passes (bf16_3x); "highest": 6 passes (bf16_6x), which is
  accurate to about f32;
- an int8 MXU (TPU v1) quantizes both operands to int8 and accumulates in int32;
- integer operands are multiplied exactly.
The decision is written into `op.params["mxu_precision"]`; numerics and timing both read it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numpy as np

from tpusim.ir.graph import Graph, Op
from tpusim.ir.opset import Category
from tpusim.ir.primitives import category_of

MxuPrecision = Literal["bf16", "bf16_3x", "bf16_6x", "int8", "int"]
PASSES: dict[str, int] = {"bf16": 1, "bf16_3x": 3, "bf16_6x": 6, "int8": 1, "int": 1}
USER_PRECISIONS = ("default", "high", "highest")


def _requested(op: Op) -> str | None:
    """The jax.lax.Precision the user attached to this op, if any ('HIGH'/'HIGHEST')."""
    prec = op.params.get("precision")
    if prec is None:
        return None
    items = prec if isinstance(prec, (tuple, list)) else (prec,)
    names = {str(getattr(p, "name", p)).upper() for p in items if p is not None}
    for level in ("HIGHEST", "HIGH"):
        if any(level == n or n.endswith("." + level) for n in names):
            return level
    return None


def choose_precision(op: Op, precision: str, mxu_dtype: str) -> MxuPrecision:
    in_dtypes = [np.dtype(v.dtype) for v in op.inputs[:2]]
    if all(d.kind in "iub" for d in in_dtypes):
        return "int"
    if mxu_dtype == "int8":
        return "int8"
    if all(d.itemsize <= 2 for d in in_dtypes):
        return "bf16"  # bf16/f16 operands: one pass, nothing to emulate
    asked = _requested(op)
    if precision == "highest" or asked == "HIGHEST":
        return "bf16_6x"
    if precision == "high" or asked == "HIGH":
        return "bf16_3x"
    return "bf16"


def assign_precision(graph: Graph, precision: str = "default", mxu_dtype: str = "bf16") -> Graph:
    """A copy of `graph` with every MXU op (nested bodies included) annotated with its MXU
    precision; `graph` itself is left as it was (it may be compiled again for another chip)."""
    ops = []
    for op in graph.ops:
        params = op.params
        if category_of(op.prim) is Category.MXU:
            params = {**op.params, "mxu_precision": choose_precision(op, precision, mxu_dtype)}
        ops.append(replace(op, params=params, subgraphs={k: assign_precision(g, precision, mxu_dtype)
                                                         for k, g in op.subgraphs.items()}))
    return Graph(list(graph.inputs), list(graph.outputs), ops)
