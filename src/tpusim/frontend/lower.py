"""Lower a closed jaxpr to the tpusim Graph IR.

Call-like primitives (jit, custom_jvp/vjp, remat) are inlined; scan, while and cond keep their
bodies as nested graphs so that a 1000-step loop stays one loop. Every primitive must be in
the opset table, else UnsupportedOpError names it and the user's source line.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax._src import source_info_util
from jax.extend import core as jcore
from jax.extend.core import primitives as jprims

from tpusim.errors import UnsupportedOpError
from tpusim.ir.graph import Graph, Op, Value, numbering
from tpusim.ir.opset import INLINED_CALLS, Category
from tpusim.ir.primitives import category_of


_LIBRARY_MARKERS = ("site-packages", "dist-packages", "/jax/_src/", "/keras/src/")


def _scope(eqn: Any, outer: str) -> str:
    inner = str(eqn.source_info.name_stack)
    return "/".join(x for x in (outer, inner) if x)


def _where(eqn: Any, call_site: str, outer_scope: str = "") -> str:
    """'layer/scope (file:line (function))' for an equation. Equations inside library code
    (jnp.linalg, Keras internals) report the user's nearest call site instead."""
    try:
        loc = source_info_util.summarize(eqn.source_info)
    except Exception:  # pragma: no cover - source info is best effort
        loc = ""
    if (not loc or any(m in loc for m in _LIBRARY_MARKERS)) and call_site:
        loc = call_site
    scope = _scope(eqn, outer_scope)
    return f"{scope} ({loc})" if scope and loc else (scope or loc or "<unknown location>")


def _user_loc(eqn: Any, call_site: str) -> str:
    try:
        loc = source_info_util.summarize(eqn.source_info)
    except Exception:  # pragma: no cover
        loc = ""
    return call_site if (not loc or any(m in loc for m in _LIBRARY_MARKERS)) and call_site else loc


def _category_from_scope(scope: str) -> str:
    """JAX marks autodiff in the name stack: 'transpose(jvp(layer))' is backward-pass work,
    'jvp(layer)' the forward pass of a differentiated function (its results that live into the
    backward pass are the saved activations)."""
    if scope.startswith("transpose("):
        return "gradient"
    if scope.startswith("jvp("):
        return "activation"
    return ""


def _np_dtype(aval: Any) -> np.dtype:
    if jax.dtypes.issubdtype(aval.dtype, jax.dtypes.extended):
        return np.dtype("uint64")  # PRNG key: two uint32 words
    return np.dtype(aval.dtype)


def _memory(aval: Any) -> str:
    """'host' for values JAX places in host memory (offloaded activations), else 'device'."""
    return "host" if "host" in str(getattr(aval, "memory_space", "")).lower() else "device"


def _value_for_aval(aval: Any, role: str = "temp") -> Value:
    return Value(tuple(getattr(aval, "shape", ())), _np_dtype(aval), role, memory=_memory(aval))  # type: ignore[arg-type]


def _const_value(val: Any, role: str) -> Value:
    arr = val if isinstance(val, jax.Array) and jax.dtypes.issubdtype(val.dtype, jax.dtypes.extended) else np.asarray(val)
    shape = tuple(getattr(arr, "shape", ()))
    v = Value(shape, _np_dtype(arr) if hasattr(arr, "dtype") else np.asarray(arr).dtype, role)  # type: ignore[arg-type]
    v.const = arr
    return v


def _sub_jaxpr(params: dict[str, Any]) -> tuple[Any, list[Any]]:
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = params.get(key)
        if isinstance(sub, jcore.ClosedJaxpr):
            return sub.jaxpr, list(sub.consts)
        if isinstance(sub, jcore.Jaxpr):
            return sub, []
    raise KeyError("no sub-jaxpr")


class _Lowerer:
    def __init__(self) -> None:
        self.call_site = ""  # the user's source line of the innermost inlined call
        self.scope = ""  # name stack of the enclosing inlined calls

    def lower_jaxpr(self, jaxpr: Any, consts: list[Any], args: list[Value], ops: list[Op], const_role: str,
                    const_names: dict[int, str] | None = None) -> list[Value]:
        env: dict[Any, Value] = {}

        def read(atom: Any) -> Value:
            if isinstance(atom, jcore.Literal):
                return _const_value(atom.val, "literal")
            return env[atom]

        for var, c in zip(jaxpr.constvars, consts):
            env[var] = _const_value(c, const_role if np.size(c) > 1 else "literal")
            if const_names and id(c) in const_names:
                env[var].name = const_names[id(c)]
        for var, a in zip(jaxpr.invars, args):
            env[var] = a
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            ins = [read(a) for a in eqn.invars]
            if name == "device_put":  # one op per operand: a host transfer, or an identity
                outs = [_value_for_aval(v.aval) for v in eqn.outvars]
                ops.extend(self.device_put(eqn, ins, outs))
            elif name in INLINED_CALLS:
                sub, sub_consts = _sub_jaxpr(eqn.params)
                saved = self.call_site, self.scope
                self.call_site, self.scope = _user_loc(eqn, self.call_site), _scope(eqn, self.scope)
                outs = self.lower_jaxpr(sub, sub_consts, ins, ops, "literal")
                self.call_site, self.scope = saved
            else:
                outs = [_value_for_aval(v.aval) for v in eqn.outvars]
                op = self.make_op(eqn, ins, outs)
                if op.scope:
                    category = _category_from_scope(op.scope)
                    for o in outs:
                        o.name = f"{op.scope.split('/')[-1]}/%{o.id}"
                        o.category = category
                ops.append(op)
            for var, val in zip(eqn.outvars, outs):
                env[var] = val
        return [read(a) for a in jaxpr.outvars]

    def subgraph(self, closed: Any) -> Graph:
        jaxpr, consts = (closed.jaxpr, list(closed.consts)) if isinstance(closed, jcore.ClosedJaxpr) else (closed, [])
        inputs = [_value_for_aval(v.aval, "input") for v in jaxpr.invars]
        ops: list[Op] = []
        outs = self.lower_jaxpr(jaxpr, consts, inputs, ops, "literal")
        return Graph(inputs, outs, ops)

    def device_put(self, eqn: Any, ins: list[Value], outs: list[Value]) -> list[Op]:
        """`jax.device_put` inside a program: moving a value to host memory (activation
        offloading, remat policies that offload) or back is a transfer over the host link;
        anything else (a placement on the same memory) is a copy."""
        where, scope = _where(eqn, self.call_site, self.scope), _scope(eqn, self.scope)
        ops = []
        for v, o in zip(ins, outs):
            if v.memory != o.memory:
                prim = "host_offload" if o.memory == "host" else "host_fetch"
                ops.append(Op(prim, [v], [o], {}, where, None, {}, scope))
            else:
                ops.append(Op("copy", [v], [o], {}, where, jprims.copy_p, {}, scope))
        return ops

    def make_op(self, eqn: Any, ins: list[Value], outs: list[Value]) -> Op:
        name = eqn.primitive.name
        where = _where(eqn, self.call_site, self.scope)
        if category_of(name) is None:
            raise UnsupportedOpError(name, where)
        params = dict(eqn.params)
        subgraphs: dict[str, Graph] = {}
        if name == "scan":
            subgraphs["body"] = self.subgraph(params.pop("jaxpr"))
            params["trip_count"] = int(params["length"])
        elif name == "while":
            subgraphs["cond"] = self.subgraph(params.pop("cond_jaxpr"))
            subgraphs["body"] = self.subgraph(params.pop("body_jaxpr"))
            params["trip_count"] = _while_trip_count(subgraphs, params, ins)
        elif name == "cond":
            for i, br in enumerate(params.pop("branches")):
                subgraphs[f"branch{i}"] = self.subgraph(br)
        elif name == "shard_map":  # a per-device body: the SPMD pass inlines it (compiler/manual.py)
            subgraphs["body"] = self.subgraph(params.pop("jaxpr"))
            params["mesh_axes"] = dict(params.pop("mesh").shape)
        if category_of(name) is Category.MXU and any(v.dtype.kind == "c" for v in ins + outs):
            raise UnsupportedOpError(name, where, "a complex matmul or convolution (the MXU multiplies real numbers): "
                                     "write it as real products of the real and imaginary parts")
        return Op(name, ins, outs, params, where, eqn.primitive, subgraphs, _scope(eqn, self.scope))


def _while_trip_count(subgraphs: dict[str, Graph], params: dict[str, Any], ins: list[Value]) -> int | None:
    """Recognise fori-style loops: a counter carry that starts at a constant, is compared with
    `lt` against a constant in the condition, and is incremented by 1 in the body."""
    cond, body = subgraphs["cond"], subgraphs["body"]
    nc, nb = int(params["cond_nconsts"]), int(params["body_nconsts"])
    carries_in = ins[nc + nb:]
    if len(cond.ops) != 1 or cond.ops[0].prim != "lt":
        return None
    lhs, rhs = cond.ops[0].inputs
    cond_carries = cond.inputs[nc:]
    if lhs not in cond_carries or not rhs.is_const:
        return None
    idx = cond_carries.index(lhs)
    start = carries_in[idx]
    if not start.is_const:
        return None
    body_in = body.inputs[nb + idx]
    body_out = body.outputs[idx]
    step_ok = any(
        op.prim == "add" and op.outputs[0] is body_out and body_in in op.inputs
        and any(v.is_const and np.all(np.asarray(v.const) == 1) for v in op.inputs)
        for op in body.ops
    )
    if not step_ok:
        return None
    return max(0, int(np.asarray(rhs.const)) - int(np.asarray(start.const)))


def lower(closed_jaxpr: Any, const_names: dict[int, str] | None = None, in_names: list[str] | None = None) -> Graph:
    """ClosedJaxpr -> Graph. Closed-over arrays (e.g. Keras weights) become 'param' values,
    named by `const_names` (id of the array -> name) where given. Ids count from 0."""
    with numbering(0):
        lw = _Lowerer()
        jaxpr = closed_jaxpr.jaxpr
        inputs = [_value_for_aval(v.aval, "input") for v in jaxpr.invars]
        for i, v in enumerate(inputs):
            v.name = in_names[i] if in_names and i < len(in_names) else f"arg{i}"
        ops: list[Op] = []
        outs = lw.lower_jaxpr(jaxpr, list(closed_jaxpr.consts), inputs, ops, "param", const_names or {})
        return Graph(inputs, outs, ops)
