"""A JAX reference that rounds MXU inputs the way the TPU does, to check tpusim against.

It interprets the same jaxpr with JAX's own CPU kernels, except that the float operands of
dot_general and conv_general_dilated are first rounded to bf16 (one-pass MXU semantics) and
then multiplied in f32. It shares no code with tpusim's compiler or MXU numerics.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from tpusim.frontend.trace import trace
from tpusim.ir.opset import INLINED_CALLS, Category
from tpusim.ir.primitives import category_of


def _round_bf16(x: Any) -> Any:
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype.itemsize > 2:
        return x.astype(jnp.bfloat16).astype(jnp.float32)
    return x


def _mxu(eqn: Any, args: list[Any]) -> Any:
    out_dtype = eqn.outvars[0].aval.dtype
    (a, b), rest = (_round_bf16(x) for x in args[:2]), args[2:]  # rest: a ragged dot's group sizes
    if jnp.issubdtype(a.dtype, jnp.floating):
        a, b = a.astype(jnp.float32), b.astype(jnp.float32)
        params = dict(eqn.params, precision=(jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST),
                      preferred_element_type=jnp.float32)
    else:
        params = dict(eqn.params)
    return eqn.primitive.bind(a, b, *rest, **params).astype(out_dtype)


def _eval(jaxpr: Any, consts: list[Any], args: list[Any]) -> list[Any]:
    env: dict[Any, Any] = {}

    def read(a: Any) -> Any:
        return a.val if isinstance(a, jcore.Literal) else env[a]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        ins = [read(a) for a in eqn.invars]
        name, p = eqn.primitive.name, eqn.params
        if category_of(name) is Category.MXU:
            outs = [_mxu(eqn, ins)]
        elif name in INLINED_CALLS:
            sub = next(p[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in p)
            outs = _eval_closed(sub, ins)
        elif name == "scan":
            outs = _scan(p, ins)
        elif name == "while":
            nc, nb = p["cond_nconsts"], p["body_nconsts"]
            cc, bc, carry = ins[:nc], ins[nc:nc + nb], ins[nc + nb:]
            while bool(_eval_closed(p["cond_jaxpr"], [*cc, *carry])[0]):
                carry = _eval_closed(p["body_jaxpr"], [*bc, *carry])
            outs = carry
        elif name == "cond":
            idx = int(np.clip(int(ins[0]), 0, len(p["branches"]) - 1))
            outs = _eval_closed(p["branches"][idx], ins[1:])
        else:
            res = eqn.primitive.bind(*ins, **p)
            outs = list(res) if eqn.primitive.multiple_results else [res]
        env.update(zip(eqn.outvars, outs))
    return [read(a) for a in jaxpr.outvars]


def _eval_closed(closed: Any, args: list[Any]) -> list[Any]:
    if isinstance(closed, jcore.ClosedJaxpr):
        return _eval(closed.jaxpr, list(closed.consts), args)
    return _eval(closed, [], args)


def _scan(p: dict[str, Any], ins: list[Any]) -> list[Any]:
    nc, nk, length = p["num_consts"], p["num_carry"], p["length"]
    consts, carry, xs = ins[:nc], ins[nc:nc + nk], ins[nc + nk:]
    ys = []
    order = range(length - 1, -1, -1) if p["reverse"] else range(length)
    for i in order:
        outs = _eval_closed(p["jaxpr"], [*consts, *carry, *[x[i] for x in xs]])
        carry, y = outs[:nk], outs[nk:]
        ys.append(y)
    if p["reverse"]:
        ys.reverse()
    n_y = len(p["jaxpr"].jaxpr.outvars) - nk
    stacked = [jnp.stack([y[j] for y in ys]) for j in range(n_y)]
    return [*carry, *stacked]


def bf16_reference(fn_or_model: Any, *args: Any) -> Any:
    """Outputs of `fn_or_model(*args)` with MXU inputs rounded to bf16 (f32 accumulation)."""
    traced = trace(fn_or_model, *args)
    flat = [jnp.asarray(a) for a in jax.tree.leaves(args)]
    outs = _eval_closed(traced.closed_jaxpr, flat)
    return jax.tree.unflatten(traced.out_tree, [np.asarray(o) for o in outs])


def relative_error(actual: Any, expected: Any) -> float:
    """Frobenius relative error over all leaves of two pytrees of arrays."""
    a = np.concatenate([np.ravel(np.asarray(x, dtype=np.float64)) for x in jax.tree.leaves(actual)])
    e = np.concatenate([np.ravel(np.asarray(x, dtype=np.float64)) for x in jax.tree.leaves(expected)])
    denom = np.linalg.norm(e)
    return float(np.linalg.norm(a - e) / (denom if denom > 0 else 1.0))
