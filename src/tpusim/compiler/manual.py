"""shard_map bodies: code the user already wrote per device, with its collectives spelled out.

Inside `jax.shard_map` the program is per device (local shapes) and the communication is what
the user wrote (psum, ppermute, all_gather, psum_scatter, all_to_all, axis_index), as in
pipeline-parallel loops and expert-parallel MoE layers. The SPMD pass reshards the shard_map's
operands to its `in_specs`; this module turns the body into tpusim's per-device ops: JAX's
named-axis collectives become the collective kernels the simulator prices and runs (their
untiled forms are reshapes around the tiled ones), `axis_index` becomes this device's element
of an iota, and `pvary` (a type-level marker of device-varying values) disappears.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from jax.extend.core import primitives as jprims

from tpusim.errors import ShardingError
from tpusim.ir.graph import Graph, Op, Value

# JAX's named-axis primitives, as they appear inside a shard_map body.
MANUAL_COLLECTIVES = ("psum", "psum_invariant", "pmax", "pmin", "ppermute", "pvary", "pbroadcast", "axis_index",
                      "all_gather", "reduce_scatter", "all_to_all")
_REDUCTION = {"psum": "sum", "psum_invariant": "sum", "pmax": "max", "pmin": "min"}


def shard_map_meshes(graph: Graph) -> list[dict[str, int]]:
    """The mesh of every shard_map in `graph`, nested bodies included."""
    found = []
    for op in graph.ops:
        if op.prim == "shard_map":
            found.append(dict(op.params["mesh_axes"]))
        for sub in op.subgraphs.values():
            found += shard_map_meshes(sub)
    return found


def _axes(name: Any) -> tuple[str, ...]:
    """Named mesh axes of a collective (positional pmap axes never occur under shard_map)."""
    names = name if isinstance(name, (tuple, list)) else (name,)
    return tuple(a for a in names if isinstance(a, str))


class _Localizer:
    def __init__(self, mesh_axes: dict[str, int]) -> None:
        self.mesh = mesh_axes
        self.ops: list[Op] = []

    def emit(self, prim: str, ins: list[Value], out: Value, params: dict[str, Any], op: Op, jax_prim: Any = None) -> Value:
        self.ops.append(Op(prim, ins, [out], params, op.where, jax_prim, {}, op.scope))
        return out

    def reshape(self, v: Value, shape: tuple[int, ...], op: Op, out: Value | None = None) -> Value:
        out = out or Value(shape, v.dtype, "temp", name=v.name, category=v.category)
        return self.emit("reshape", [v], out, {"new_sizes": tuple(shape), "dimensions": None, "sharding": None},
                         op, jprims.reshape_p)

    def temp(self, like: Value, shape: tuple[int, ...]) -> Value:
        return Value(tuple(shape), like.dtype, "temp", name=like.name, category=like.category)

    def translate(self, op: Op, env: dict[int, Value]) -> None:
        ins = [env.get(v.id, v) for v in op.inputs]
        p = op.params
        prim = op.prim
        if prim in ("pvary", "pbroadcast"):  # no data moves: the value is already on every device
            for v, o in zip(ins, op.outputs):
                env[o.id] = v
            return
        if prim == "shard_map":
            raise ShardingError(f"a shard_map nested in another shard_map's body at {op.where} is not supported; "
                                "put both in one shard_map over all the axes")
        axes = _axes(p.get("axes", p.get("axis_name")))
        if prim in _REDUCTION:
            for v, o in zip(ins, op.outputs):
                if axes:
                    self.emit("all_reduce", [v], o, {"axes": axes, "op": _REDUCTION[prim]}, op)
                else:
                    env[o.id] = v
        elif prim == "ppermute":
            perm = tuple((int(s), int(d)) for s, d in p["perm"])
            self.emit("collective_permute", ins, op.outputs[0], {"axes": axes, "perm": perm}, op)
        elif prim == "axis_index":
            n = math.prod(self.mesh[a] for a in axes)
            out = op.outputs[0]
            iota = self.emit("iota", [], self.temp(out, (n,)),
                             {"dtype": np.dtype(out.dtype), "shape": (n,), "dimension": 0, "sharding": None}, op, jprims.iota_p)
            mine = self.emit("shard_slice", [iota], self.temp(out, (1,)), {"axes": axes, "dim": 0}, op)
            self.reshape(mine, (), op, out)
        elif prim == "all_gather":
            d, src = int(p["all_gather_dimension"]), ins[0]
            if not p.get("tiled"):  # untiled: the gathered pieces form a new dimension
                src = self.reshape(src, src.shape[:d] + (1,) + src.shape[d:], op)
            self.emit("all_gather", [src], op.outputs[0], {"axes": axes, "dim": d}, op)
        elif prim == "reduce_scatter":
            d, out = int(p["scatter_dimension"]), op.outputs[0]
            if p.get("tiled"):
                self.emit("reduce_scatter", ins, out, {"axes": axes, "dim": d, "op": "sum"}, op)
            else:  # untiled: the scattered dimension (of the axis' size) goes away
                piece = self.temp(out, ins[0].shape[:d] + (1,) + ins[0].shape[d + 1:])
                self.reshape(self.emit("reduce_scatter", ins, piece, {"axes": axes, "dim": d, "op": "sum"}, op), out.shape, op, out)
        elif prim == "all_to_all":
            self.all_to_all(op, ins[0], axes, int(p["split_axis"]), int(p["concat_axis"]), bool(p.get("tiled")))
        else:
            subs = {k: self.graph(g) for k, g in op.subgraphs.items()}
            # shardings in params name the manual mesh, which the per-device numerics run without
            params = {k: None if k in ("sharding", "out_sharding") else v for k, v in p.items()}
            self.ops.append(Op(prim, ins, list(op.outputs), params, op.where, op.jax_prim, subs, op.scope))

    def all_to_all(self, op: Op, src: Value, axes: tuple[str, ...], split: int, concat: int, tiled: bool) -> None:
        out = op.outputs[0]
        if tiled:
            self.emit("all_to_all", [src], out, {"axes": axes, "split_dim": split, "concat_dim": concat}, op)
            return
        # Untiled: the split dimension (of the axis' size) is consumed and a new one of that size
        # appears at `concat`. As a tiled exchange: add a unit dimension where the pieces go,
        # exchange, then drop the split dimension (now of size 1).
        n = math.prod(self.mesh[a] for a in axes)
        pos = concat if concat <= split else concat + 1
        split += concat <= split
        shape = list(src.shape)
        shape.insert(pos, 1)
        widened = self.reshape(src, tuple(shape), op)
        shape[split] //= n
        shape[pos] *= n
        moved = self.emit("all_to_all", [widened], self.temp(out, tuple(shape)),
                          {"axes": axes, "split_dim": split, "concat_dim": pos}, op)
        self.reshape(moved, out.shape, op, out)

    def graph(self, g: Graph) -> Graph:
        inner = _Localizer(self.mesh)
        env: dict[int, Value] = {}
        for op in g.ops:
            inner.translate(op, env)
        return Graph(list(g.inputs), [env.get(v.id, v) for v in g.outputs], inner.ops)


def localize(body: Graph, local_inputs: list[Value], mesh_axes: dict[str, int]) -> tuple[list[Op], list[Value]]:
    """The per-device ops of a shard_map body whose inputs are `local_inputs`, and its results."""
    lz = _Localizer(mesh_axes)
    env = {b.id: v for b, v in zip(body.inputs, local_inputs)}
    for op in body.ops:
        lz.translate(op, env)
    return lz.ops, [env.get(v.id, v) for v in body.outputs]
