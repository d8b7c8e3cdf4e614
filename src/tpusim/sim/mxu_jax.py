"""The MXU's arithmetic as JAX operations, for staged numerics.

The same arithmetic as sim/mxu.py (bf16-rounded operands, exact products, f32 accumulation;
multi-pass precisions as bf16 parts whose cross products are summed smallest first) expressed
with XLA's dot and convolution, so a whole program compiles into one function. The products
are exact either way; what XLA chooses is the order of the f32 additions inside one product,
where sim/mxu.py walks the plan's K blocks (and, with `strict`, every grid step) in NumPy. Integer
MXUs (TPU v1's int8, integer dots) call sim/mxu.py from the staged function, so their
quantization and integer sums are the interpreter's exactly.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tpusim.ir.geometry import conv_geometry
from tpusim.ir.graph import Op
from tpusim.program.program import MxuPlan
from tpusim.sim.mxu import _PARTS, _TERMS, conv_taps


def _parts(x: Any, precision: str) -> list[Any]:
    """x ~= the sum of bf16 parts (hi, mid, lo), each as f32: sim/mxu.split_bf16, traced. The
    rounding is `reduce_precision` (bf16's 8 exponent and 7 mantissa bits, nearest even), not a
    round trip through bf16, which XLA would fold into a bf16 product of lower precision."""
    rest = jnp.asarray(x).astype(jnp.float32)
    out = []
    for _ in range(_PARTS[precision]):
        p = jax.lax.reduce_precision(rest, exponent_bits=8, mantissa_bits=7)
        out.append(p)
        rest = rest - p
    return out


def _product(anchor: Op, a: Any, b: Any, *extra: Any) -> Any:
    p = anchor.params
    exact = jax.lax.Precision.HIGHEST
    if anchor.prim == "dot_general":
        return jax.lax.dot_general(a, b, p["dimension_numbers"], precision=exact, preferred_element_type=jnp.float32)
    if anchor.prim == "ragged_dot_general":  # extra: the group sizes
        return jax.lax.ragged_dot_general(a, b, extra[0], p["ragged_dot_dimension_numbers"], precision=exact,
                                          preferred_element_type=jnp.float32, group_offset=p.get("group_offset"))
    return jax.lax.conv_general_dilated(
        a, b, p["window_strides"], p["padding"], p["lhs_dilation"], p["rhs_dilation"], p["dimension_numbers"],
        p["feature_group_count"], p["batch_group_count"], precision=exact, preferred_element_type=jnp.float32)


def mxu_product(anchor: Op, plan: MxuPlan, lhs: Any, rhs: Any, *extra: Any) -> Any:
    """The matmul/conv `anchor` as the MXU computes it, in the dtype of its output (`extra`: a
    ragged dot's group sizes)."""
    out = anchor.outputs[0]
    if plan.engine == "vpu":  # a depthwise conv: f32 multiply-adds of the rounded operands
        a, b = (_parts(x, "bf16")[0] if plan.precision == "bf16" else jnp.asarray(x).astype(jnp.float32) for x in (lhs, rhs))
        return _product(anchor, a, b).astype(out.dtype)
    if plan.precision not in _TERMS:
        if anchor.prim == "ragged_dot_general":  # no integer model of a ragged dot: exact products
            return _product(anchor, jnp.asarray(lhs).astype(jnp.float32), jnp.asarray(rhs).astype(jnp.float32),
                            *extra).astype(out.dtype)
        # integer MXU arithmetic: the interpreter's, called from the graph
        return jax.pure_callback(lambda x, y: _host_product(anchor, plan, x, y), jax.ShapeDtypeStruct(out.shape, out.dtype),
                                 lhs, rhs, vmap_method="sequential")
    a_parts, b_parts = _parts(lhs, plan.precision), _parts(rhs, plan.precision)
    acc = None
    for i, j in _TERMS[plan.precision]:
        term = _product(anchor, a_parts[i], b_parts[j], *extra)
        acc = term if acc is None else acc + term
    return acc.astype(out.dtype)


def _host_product(anchor: Op, plan: MxuPlan, lhs: Any, rhs: Any) -> np.ndarray:
    from tpusim.sim.numerics import _vpu_conv, dot_product

    lhs, rhs = np.asarray(lhs), np.asarray(rhs)
    if anchor.prim == "dot_general":
        acc = dot_product(anchor, plan, lhs, rhs, False)
    elif int(anchor.params["batch_group_count"]) > 1:  # as the interpreter's strict path does
        acc = _vpu_conv(anchor, plan, lhs, rhs)
    else:
        acc = conv_taps(lhs, rhs, conv_geometry(anchor), plan)
    return np.asarray(acc.astype(anchor.outputs[0].dtype))
