"""SPMD partitioning: split a global graph into the program one device runs, inserting the
collectives that keep it equal to the unsplit program.

Shardings use JAX's vocabulary: a PartitionSpec per array names, for each dimension, the mesh
axes it is split over. A value may also be *partial*: every device holds a summand and the true
value is their sum over some mesh axes (what a matmul over a split contracting dimension leaves).

Sharding flows forward through the graph, op by op, with one rule per kind of op:
- elementwise ops take the sharding of their most-split operand; the others are resharded;
- dot_general keeps batch and free-dimension splits; a contracting dimension split the same way
  on both sides leaves a partial sum (data-parallel gradients, Megatron's row-parallel layer); a
  contracting dimension split on one side only is all-gathered first (FSDP's weight gather);
- convolutions keep batch and output-feature splits; split input features leave a partial sum;
- broadcast, reshape (when the split dimension stays major), transpose and reductions carry the
  split along (a sum over a split dimension is partial; max/min all-reduce at once);
- pooling keeps splits on dimensions its window does not touch; gathers of a replicated table
  keep the index splits; scatter-adds into a replicated table become partial sums;
- `jax.lax.with_sharding_constraint` reshards to what it asks for;
- `jax.shard_map` reshards its operands to its in_specs and inlines its per-device body, whose
  collectives the user wrote (compiler/manual.py); its results have its out_specs;
- anything else (loops, sorts, ...) runs replicated: its inputs are all-gathered first.
Resharding picks the collective: partial -> split is a reduce-scatter, partial -> replicated an
all-reduce, split -> replicated an all-gather, replicated -> split a local slice (free), a split
moving from one dimension to another an all-to-all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from tpusim.errors import ShardingError
from tpusim.ir.geometry import conv_geometry, dot_geometry
from tpusim.ir.graph import Graph, Op, Value
from tpusim.ir.opset import Category
from tpusim.ir.primitives import PRIMITIVES, category_of

Axes = tuple[str, ...]




@dataclass(frozen=True)
class Sharding:
    dims: tuple[Axes, ...]  # mesh axes splitting each dimension, major to minor
    partial: frozenset[str] = frozenset()  # mesh axes over which the value is an unreduced sum

    @staticmethod
    def replicated(rank: int) -> "Sharding":
        return Sharding(tuple(() for _ in range(rank)))

    @property
    def used_axes(self) -> set[str]:
        return {a for d in self.dims for a in d}

    def is_replicated(self) -> bool:
        return not self.used_axes and not self.partial

    def spec(self) -> tuple:
        return tuple(None if not d else (d[0] if len(d) == 1 else d) for d in self.dims)


def sharding_from_spec(spec: Any, rank: int) -> Sharding:
    """A jax.sharding.PartitionSpec (or tuple, or None) as a Sharding."""
    if spec is None:
        return Sharding.replicated(rank)
    entries = list(spec) + [None] * (rank - len(tuple(spec)))
    if len(entries) > rank:
        raise ShardingError(f"PartitionSpec {spec} has more entries than the array's {rank} dimensions")
    dims = []
    for e in entries:
        if e is None:
            dims.append(())
        elif isinstance(e, str):
            dims.append((e,))
        else:
            dims.append(tuple(e))
    return Sharding(tuple(dims))


@dataclass
class _Placed:
    """A global value, its current sharding and the per-device value holding it."""

    sharding: Sharding
    local: Value


@dataclass
class ShardedGraph:
    graph: Graph  # the per-device program (local shapes, collectives inserted)
    mesh_axes: dict[str, int]
    in_shardings: list[Sharding]
    out_shardings: list[Sharding]
    collectives: list[Op] = field(default_factory=list)


class _Partitioner:
    def __init__(self, mesh_axes: dict[str, int]) -> None:
        self.mesh = dict(mesh_axes)
        self.ops: list[Op] = []
        self.env: dict[int, _Placed] = {}
        # Broadcasts of small replicated values are not materialized where they appear (JAX hoists
        # loop-invariant masks out of loops at full size): each use builds the block it needs.
        self.lazy: dict[int, Op] = {}
        self.lazy_built: dict[tuple[int, Sharding], Value] = {}
        # Values are immutable, so one resharding serves every consumer that asks for it (XLA
        # deduplicates the collectives: q, k and v share one all-gather of their input).
        self.resharded: dict[tuple[int, Sharding], Value] = {}
        # (table shape, dim) -> axes: tables gathered from along a split dim; their gradient
        # scatter-adds keep that split (compiler/shard_masked.py)
        self.masked_tables: dict[tuple[tuple[int, ...], int], Axes] = {}

    # ---- shapes ------------------------------------------------------------------------------
    def split(self, axes: Axes) -> int:
        return math.prod(self.mesh[a] for a in axes)

    def local_shape(self, shape: tuple[int, ...], sh: Sharding, where: str = "") -> tuple[int, ...]:
        out = []
        for size, axes in zip(shape, sh.dims):
            n = self.split(axes)
            if size % n:
                raise ShardingError(f"dimension of size {size} cannot be split over mesh axes {axes} ({n} ways){where}; "
                                    "choose a PartitionSpec whose axes divide it")
            out.append(size // n)
        return tuple(out)

    def check(self, sh: Sharding) -> None:
        for a in sh.used_axes | set(sh.partial):
            if a not in self.mesh:
                raise ShardingError(f"mesh has no axis '{a}' (axes: {', '.join(self.mesh)})")
        seen: set[str] = set()
        for d in sh.dims:
            for a in d:
                if a in seen:
                    raise ShardingError(f"mesh axis '{a}' splits two dimensions of one array")
                seen.add(a)

    # ---- values ------------------------------------------------------------------------------
    def place(self, v: Value) -> _Placed:
        if v.id in self.env:
            return self.env[v.id]
        if v.is_const:  # literals and closed-over constants: every device has all of it
            placed = _Placed(Sharding.replicated(len(v.shape)), v)
            self.env[v.id] = placed
            return placed
        raise ShardingError(f"value {v} used before it was defined (compiler bug)")

    def new_local(self, like: Value, shape: tuple[int, ...]) -> Value:
        return Value(shape, like.dtype, "temp", name=like.name, category=like.category, memory=like.memory)

    def emit(self, prim: str, inputs: list[Value], out: Value, params: dict[str, Any], where: str = "") -> Value:
        op = Op(prim, inputs, [out], params, where, None, {}, prim)
        self.ops.append(op)
        return out

    # ---- resharding --------------------------------------------------------------------------
    def build_lazy(self, v: Value, dst: Sharding) -> Value:
        key = (v.id, Sharding(dst.dims))
        if key not in self.lazy_built:
            op = self.lazy[v.id]
            src = op.inputs[0]
            bdims = op.params["broadcast_dimensions"]
            src_sh = Sharding(tuple(dst.dims[d] if src.shape[i] == v.shape[d] else () for i, d in enumerate(bdims)))
            local_src = self.reshard(src, src_sh, op.where) if not (src.is_const and src.size <= 1) else src
            out = self.new_local(v, self.local_shape(v.shape, Sharding(dst.dims)))
            self.ops.append(Op(op.prim, [local_src], [out], dict(op.params, shape=out.shape), op.where, op.jax_prim, {}, op.scope))
            self.lazy_built[key] = out
        return self.lazy_built[key]

    def reshard(self, v: Value, dst: Sharding, where: str = "") -> Value:
        """The local value of `v` with sharding `dst` (inserting collectives as needed)."""
        if v.id in self.lazy:
            return self.build_lazy(v, Sharding(dst.dims))
        placed = self.place(v)
        src, local = placed.sharding, placed.local
        if src == dst:
            return local
        key = (v.id, dst)
        if key not in self.resharded:
            self.resharded[key] = self._reshard(v, src, local, dst, where)
        return self.resharded[key]

    def _reshard(self, v: Value, src: Sharding, local: Value, dst: Sharding, where: str) -> Value:
        mark = len(self.ops)
        try:
            return self._reshard_direct(v, src, local, dst, where)
        except ShardingError:
            # an intermediate step would split a dimension unevenly: go through replicated
            del self.ops[mark:]
            self.local_shape(v.shape, dst, where)  # the target itself must be valid
            if src.partial:
                local = self.emit("all_reduce", [local], self.new_local(v, local.shape),
                                  {"axes": tuple(sorted(src.partial)), "op": "sum"}, where)
            return self.reshard_via_replicated(v, local, Sharding(src.dims), dst, where)

    def _reshard_direct(self, v: Value, src: Sharding, local: Value, dst: Sharding, where: str) -> Value:
        cur = src
        # 1. resolve partial sums as XLA does: first reduce-scatter onto the dims dst splits by
        # those axes (each shrinks what is left to send), then one combined all-reduce over every
        # remaining axis, on the shard (hierarchical: ICI before DCN, see collectives.py), never
        # the whole tensor over DCN.
        if cur.partial:
            rest = []
            for axis in sorted(cur.partial):
                target = next((i for i, d in enumerate(dst.dims)
                               if axis in d and axis not in cur.dims[i] and d[:len(cur.dims[i])] == cur.dims[i]), None)
                if target is None or axis in cur.used_axes:
                    rest.append(axis)
                    continue
                dims = list(cur.dims)
                dims[target] = dims[target] + (axis,)
                nxt = Sharding(tuple(dims), cur.partial - {axis})
                local = self.emit("reduce_scatter", [local], self.new_local(v, self.local_shape(v.shape, nxt)),
                                  {"axes": (axis,), "dim": target, "op": "sum"}, where)
                cur = nxt
            if rest:
                local = self.emit("all_reduce", [local], self.new_local(v, local.shape),
                                  {"axes": tuple(rest), "op": "sum"}, where)
                cur = Sharding(cur.dims, cur.partial - set(rest))
        # 2. move axes between dimensions with all-to-all; gather axes dst does not want there.
        for i, axes in enumerate(cur.dims):
            for axis in reversed(axes):
                if axis in dst.dims[i]:
                    continue
                j = next((k for k, d in enumerate(dst.dims) if axis in d), None)
                dims = [list(d) for d in cur.dims]
                dims[i].remove(axis)
                if j is not None and axis not in cur.dims[j]:
                    dims[j].append(axis)
                    nxt = Sharding(tuple(tuple(d) for d in dims), cur.partial)
                    local = self.emit("all_to_all", [local], self.new_local(v, self.local_shape(v.shape, nxt)),
                                      {"axes": (axis,), "split_dim": j, "concat_dim": i}, where)
                else:
                    nxt = Sharding(tuple(tuple(d) for d in dims), cur.partial)
                    local = self.emit("all_gather", [local], self.new_local(v, self.local_shape(v.shape, nxt)),
                                      {"axes": (axis,), "dim": i}, where)
                cur = nxt
        # 3. split what dst splits and cur does not: a local slice, no communication.
        for i, axes in enumerate(dst.dims):
            missing = tuple(a for a in axes if a not in cur.dims[i])
            if missing:
                dims = list(cur.dims)
                dims[i] = dims[i] + missing
                nxt = Sharding(tuple(dims), cur.partial)
                local = self.emit("shard_slice", [local], self.new_local(v, self.local_shape(v.shape, nxt, where)),
                                  {"axes": missing, "dim": i}, where)
                cur = nxt
        if cur.dims != dst.dims:  # order of axes within a dimension differs: regather
            local = self.reshard_via_replicated(v, local, cur, dst, where)
        return local

    def reshard_via_replicated(self, v: Value, local: Value, cur: Sharding, dst: Sharding, where: str) -> Value:
        for i, axes in enumerate(cur.dims):
            for axis in reversed(axes):
                dims = [list(d) for d in cur.dims]
                dims[i].remove(axis)
                cur = Sharding(tuple(tuple(d) for d in dims), cur.partial)
                local = self.emit("all_gather", [local], self.new_local(v, self.local_shape(v.shape, cur)),
                                  {"axes": (axis,), "dim": i}, where)
        for i, axes in enumerate(dst.dims):
            if axes:
                dims = list(cur.dims)
                dims[i] = axes
                cur = Sharding(tuple(dims), cur.partial)
                local = self.emit("shard_slice", [local], self.new_local(v, self.local_shape(v.shape, cur)),
                                  {"axes": axes, "dim": i}, where)
        return local

    # ---- ops ---------------------------------------------------------------------------------
    def run(self, graph: Graph, in_shardings: list[Sharding]) -> list[Value]:
        """Partition every op of `graph`; returns the per-device input values."""
        local_inputs = []
        for v, sh in zip(graph.inputs, in_shardings):
            self.check(sh)
            lv = Value(self.local_shape(v.shape, sh, f" (input {v.name})"), v.dtype, "input", name=v.name, category=v.category,
                       memory=v.memory)
            self.env[v.id] = _Placed(sh, lv)
            local_inputs.append(lv)
        for op in graph.ops:
            self.op(op)
        return local_inputs

    def op(self, op: Op) -> None:
        rule_name = PRIMITIVES[op.prim].shard
        if rule_name == "manual":
            self._shard_map(op)
            return
        if op.prim == "broadcast_in_dim" and self._is_small_broadcast(op):
            out = op.outputs[0]
            self.lazy[out.id] = op
            # consumers see the split it would have (its source's, along the kept dimensions)
            self.env[out.id] = _Placed(Sharding(_broadcast(self, op)[1][0].dims), out)
            return
        if op.prim == "scan":
            op = self._sink_lazy_consts(op)
        rule = SHARDING_RULES.get(rule_name)
        plan = rule(self, op) if rule is not None else None
        if plan is None:
            plan = _replicated_plan(op)
        in_shardings, out_shardings, params = plan
        local_in = [self.reshard(v, sh, op.where) if not (v.is_const and v.size <= 1) else v
                    for v, sh in zip(op.inputs, in_shardings)]
        local_out = []
        for v, sh in zip(op.outputs, out_shardings):
            lv = self.new_local(v, self.local_shape(v.shape, sh, f" (result of {op.prim} at {op.where})"))
            self.env[v.id] = _Placed(sh, lv)
            local_out.append(lv)
        subgraphs = op.subgraphs
        if "_sharded_body" in params:
            subgraphs = {"body": params.pop("_sharded_body")}
        masked = params.pop("_masked", None)
        if masked is not None:  # a table split along the dimension it is indexed on
            from tpusim.compiler.shard_masked import masked_gather, masked_scatter_add

            dim, axes = masked
            if op.prim == "gather":
                masked_gather(Op(op.prim, [], [], params, op.where, op.jax_prim, {}, op.scope), local_in[0], local_in[1],
                              local_out[0], dim, axes, self.split(axes), self.ops.append)
            else:
                masked_scatter_add(Op(op.prim, [], [], params, op.where, op.jax_prim, {}, op.scope), *local_in[:3],
                                   local_out[0], dim, axes, self.split(axes), self.ops.append)
            return
        combine = params.pop("_combine", None)
        if combine is not None:  # the local result is one device's part: combine them
            block = self.new_local(op.outputs[0], local_out[0].shape)
            self.ops.append(Op(op.prim, local_in, [block], params, op.where, op.jax_prim, subgraphs, op.scope))
            self.emit("all_reduce", [block], local_out[0], {"axes": combine[0], "op": combine[1]}, op.where)
            return
        self.ops.append(Op(op.prim, local_in, local_out, params, op.where, op.jax_prim, subgraphs, op.scope))


    def _shard_map(self, op: Op) -> None:
        from tpusim.compiler.manual import localize

        for axis, size in op.params["mesh_axes"].items():
            if self.mesh.get(axis) != size:
                raise ShardingError(f"shard_map at {op.where} runs over mesh axis '{axis}' of size {size}, but the "
                                    f"program's mesh is {self.mesh}: compile with a mesh that has that axis and size "
                                    f"(mesh={dict(op.params['mesh_axes'])})")
        local_in = []
        for v, spec in zip(op.inputs, op.params["in_specs"]):
            sh = sharding_from_spec(spec, len(v.shape))
            self.check(sh)
            local_in.append(v if v.is_const and v.size <= 1 else self.reshard(v, sh, op.where))
        ops, outs = localize(op.subgraphs["body"], local_in, self.mesh)
        self.ops.extend(ops)
        for v, local, spec in zip(op.outputs, outs, op.params["out_specs"]):
            self.env[v.id] = _Placed(sharding_from_spec(spec, len(v.shape)), local)

    def _is_small_broadcast(self, op: Op) -> bool:
        """A broadcast of a much smaller value (a scalar, a bias, a row statistic): built where
        it is used, at the sharding the user needs. A split or partial source is fine: building
        resharded it once (an all-reduce of the small source, not of the broadcast)."""
        src = op.inputs[0]
        if src.is_const and src.size <= 1:
            return True
        return src.size * 4 <= op.outputs[0].size and (src.is_const or src.id in self.env)

    def _sink_lazy_consts(self, op: Op) -> Op:
        """Move lazy broadcasts that a scan reads as constants into its body, so the body builds
        them at the sharding it needs."""
        nc = int(op.params["num_consts"])
        lazy_idx = [i for i in range(nc) if op.inputs[i].id in self.lazy]
        if not lazy_idx:
            return op
        body = op.subgraphs["body"]
        inputs = list(op.inputs)
        body_inputs = list(body.inputs)
        pre: list[Op] = []
        for i in lazy_idx:
            bop = self.lazy[op.inputs[i].id]
            src = bop.inputs[0]
            inner_src = Value(src.shape, src.dtype, "input", name=src.name)
            pre.append(Op(bop.prim, [inner_src], [body_inputs[i]], dict(bop.params), bop.where, bop.jax_prim, {}, bop.scope))
            body_inputs[i] = inner_src
            inputs[i] = src
        new_body = Graph(body_inputs, list(body.outputs), pre + list(body.ops))
        return Op(op.prim, inputs, list(op.outputs), dict(op.params), op.where, op.jax_prim, {"body": new_body}, op.scope)


Plan = tuple[list[Sharding], list[Sharding], dict[str, Any]]


def _replicated_plan(op: Op) -> Plan:
    return ([Sharding.replicated(len(v.shape)) for v in op.inputs],
            [Sharding.replicated(len(v.shape)) for v in op.outputs], dict(op.params))


def _current(p: _Partitioner, v: Value) -> Sharding:
    return p.place(v).sharding


def _without_partial(sh: Sharding) -> Sharding:
    return Sharding(sh.dims)


# Linear in one operand when the others are scalars: a partial sum stays partial through them.
_LINEAR = frozenset({"mul", "neg", "div"})


def _linear_partial(p: _Partitioner, op: Op) -> Plan | None:
    """`0.1 * grad` of a partial gradient is still a partial sum (sum_i c x_i = c sum_i x_i):
    keep it unreduced so the reduction happens where a consumer's sharding says how (a
    reduce-scatter onto the weight's FSDP shard), as GSPMD does, not at the first scaling."""
    if op.prim not in _LINEAR or len(op.outputs) != 1:
        return None
    shape = op.outputs[0].shape
    partial = [v for v in op.inputs if v.shape == shape and _current(p, v).partial]
    others = [v for v in op.inputs if v not in partial]
    if len(partial) != 1 or (op.prim == "div" and op.inputs[0] is not partial[0]):
        return None
    if any(v.size > 1 or _current(p, v).partial for v in others if not (v.is_const and v.size <= 1)):
        return None
    src = _current(p, partial[0])
    return ([src if v is partial[0] else Sharding.replicated(len(v.shape)) for v in op.inputs], [src], dict(op.params))


def _elementwise(p: _Partitioner, op: Op) -> Plan | None:
    """Operands of the output's rank follow the most-split full-size operand; dimensions of size
    1 (implicitly broadcast by JAX) and scalars stay whole."""
    linear = _linear_partial(p, op)
    if linear is not None:
        return linear
    shape = op.outputs[0].shape
    candidates = [_without_partial(_current(p, v)) for v in op.inputs if v.shape == shape and not v.is_const]
    target = max(candidates, key=lambda s: p.split(tuple(a for d in s.dims for a in d)), default=Sharding.replicated(len(shape)))

    def fit(v: Value) -> Sharding:
        if len(v.shape) != len(shape):
            return Sharding.replicated(len(v.shape))
        return Sharding(tuple(d if v.shape[i] == shape[i] else () for i, d in enumerate(target.dims)))

    return [fit(v) for v in op.inputs], [target for _ in op.outputs], dict(op.params)


def _sharding_constraint(p: _Partitioner, op: Op) -> Plan:
    """`with_sharding_constraint` and `jax.sharding.reshard` (explicit-axes meshes) both ask for
    a sharding: the value is resharded to it."""
    spec = getattr(op.params.get("sharding", op.params.get("dst_sharding")), "spec", None)
    target = sharding_from_spec(spec, len(op.inputs[0].shape))
    p.check(target)
    return [target], [target], dict(op.params)


def _broadcast(p: _Partitioner, op: Op) -> Plan:
    src = _without_partial(_current(p, op.inputs[0]))
    bdims = op.params["broadcast_dimensions"]
    out_shape = tuple(op.params["shape"])
    dims: list[Axes] = [() for _ in out_shape]
    keep = list(src.dims)
    for i, d in enumerate(bdims):
        if op.inputs[0].shape[i] == out_shape[d]:
            dims[d] = src.dims[i]
        else:
            keep[i] = ()  # a size-1 dim being broadcast cannot stay split
    out = Sharding(tuple(dims))
    params = dict(op.params, shape=p.local_shape(out_shape, out))
    return [Sharding(tuple(keep))], [out], params


def _transpose(p: _Partitioner, op: Op) -> Plan:
    src = _current(p, op.inputs[0])
    perm = op.params["permutation"]
    out = Sharding(tuple(src.dims[i] for i in perm), src.partial)
    return [src], [out], dict(op.params)


def _reshape(p: _Partitioner, op: Op) -> Plan | None:
    """Keep a split when its dimension stays the major part of an output dimension: the sizes
    before it agree, and the output dimension either merges it with minor dimensions or is its
    major factor."""
    src = _without_partial(_current(p, op.inputs[0]))
    in_shape, out_shape = op.inputs[0].shape, op.outputs[0].shape
    if op.params.get("dimensions") is not None:
        return None
    out_dims: list[Axes] = [() for _ in out_shape]
    for i, axes in enumerate(src.dims):
        if not axes:
            continue
        n = p.split(axes)
        outer = math.prod(in_shape[:i])
        j = next((j for j in range(len(out_shape)) if math.prod(out_shape[:j]) == outer and out_shape[j] > 1), None)
        if j is None:
            return None
        merges = out_shape[j] % in_shape[i] == 0 and in_shape[i] % n == 0
        splits = in_shape[i] % out_shape[j] == 0 and out_shape[j] % n == 0
        if not (merges or splits):
            return None
        out_dims[j] = axes
    out = Sharding(tuple(out_dims))
    params = dict(op.params, new_sizes=p.local_shape(out_shape, out))
    return [src], [out], params


def _squeeze(p: _Partitioner, op: Op) -> Plan:
    src = _current(p, op.inputs[0])
    gone = {d % len(src.dims) for d in op.params["dimensions"]}
    return [src], [Sharding(tuple(d for i, d in enumerate(src.dims) if i not in gone), src.partial)], dict(op.params)


def _slice(p: _Partitioner, op: Op) -> Plan:
    """Dimensions taken whole keep their split; sliced ones are gathered first."""
    src = _without_partial(_current(p, op.inputs[0]))
    starts, limits = op.params["start_indices"], op.params["limit_indices"]
    strides = op.params.get("strides") or (1,) * len(starts)
    shape = op.inputs[0].shape
    dims = tuple(d if (starts[i] == 0 and limits[i] == shape[i] and strides[i] == 1) else () for i, d in enumerate(src.dims))
    sh = Sharding(dims)
    local = p.local_shape(shape, sh)
    params = dict(op.params, limit_indices=tuple(local[i] if dims[i] else limits[i] for i in range(len(dims))))
    return [sh], [sh], params


def _reduce(p: _Partitioner, op: Op) -> Plan | None:
    src = _current(p, op.inputs[0])
    axes_param = set(op.params["axes"])
    kept = [d for i, d in enumerate(src.dims) if i not in axes_param]
    reduced_split = {a for i, d in enumerate(src.dims) if i in axes_param for a in d}
    if op.prim == "reduce_sum":
        return [src], [Sharding(tuple(kept), src.partial | frozenset(reduced_split))], dict(op.params)
    if op.prim in ("reduce_max", "reduce_min") and reduced_split:
        # each device reduces its block, then one all-reduce of the (small) result, as XLA does
        # for the row max of a vocab-split softmax
        combine = {"reduce_max": "max", "reduce_min": "min"}[op.prim]
        params = dict(op.params, _combine=(tuple(sorted(reduced_split)), combine))
        return [_without_partial(src)], [Sharding(tuple(kept))], params
    # argmax/argmin: gather only the reduced dimensions; the others keep their split
    whole = Sharding(tuple(() if i in axes_param else d for i, d in enumerate(src.dims)))
    return [whole], [Sharding(tuple(kept))], dict(op.params)


def _dot(p: _Partitioner, op: Op) -> Plan:
    g = dot_geometry(op)
    lhs, rhs = (_without_partial(_current(p, v)) for v in op.inputs[:2])
    ld, rd = list(lhs.dims), list(rhs.dims)
    used: set[str] = set()
    out_dims: list[Axes] = []
    # batch dims: keep a split both sides share (or either side's, resharding the other)
    for lb, rb in zip(g.lhs_batch, g.rhs_batch):
        axes = ld[lb] or rd[rb]
        if set(axes) & used:
            axes = ()
        ld[lb] = rd[rb] = axes
        used |= set(axes)
        out_dims.append(axes)
    partial: set[str] = set()
    for lc, rc in zip(g.lhs_contract, g.rhs_contract):
        if ld[lc] and ld[lc] == rd[rc] and not set(ld[lc]) & used:
            partial |= set(ld[lc])
            used |= set(ld[lc])
        else:  # split on one side only: gather it (FSDP's weight all-gather)
            ld[lc] = rd[rc] = ()
    for i in g.lhs_free:
        if set(ld[i]) & used:
            ld[i] = ()
        used |= set(ld[i])
        out_dims.append(ld[i])
    for i in g.rhs_free:
        if set(rd[i]) & used:
            rd[i] = ()
        used |= set(rd[i])
        out_dims.append(rd[i])
    return ([Sharding(tuple(ld)), Sharding(tuple(rd))], [Sharding(tuple(out_dims), frozenset(partial))], dict(op.params))


def _conv(p: _Partitioner, op: Op) -> Plan:
    c = conv_geometry(op)
    lhs, rhs = (_without_partial(_current(p, v)) for v in op.inputs[:2])
    ld = [() for _ in lhs.dims]
    rd = [() for _ in rhs.dims]
    od: list[Axes] = [() for _ in op.outputs[0].shape]
    used: set[str] = set()
    partial: set[str] = set()
    if c.batch_groups == 1:  # the batch split is independent of everything else (depthwise too)
        b = lhs.dims[c.lhs_spec[0]]
        ld[c.lhs_spec[0]] = od[c.out_spec[0]] = b
        used |= set(b)
    if c.groups == 1 and c.batch_groups == 1:
        fo = rhs.dims[c.rhs_spec[0]]
        if not set(fo) & used:
            rd[c.rhs_spec[0]] = od[c.out_spec[1]] = fo
            used |= set(fo)
        fi = lhs.dims[c.lhs_spec[1]]
        if fi and fi == rhs.dims[c.rhs_spec[1]] and not set(fi) & used:
            ld[c.lhs_spec[1]] = rd[c.rhs_spec[1]] = fi
            partial |= set(fi)
    return [Sharding(tuple(ld)), Sharding(tuple(rd))], [Sharding(tuple(od), frozenset(partial))], dict(op.params)


def _window(p: _Partitioner, op: Op) -> Plan | None:
    window = op.params.get("window_dimensions")
    strides = op.params.get("window_strides")
    padding = op.params.get("padding")
    if window is None:
        return None
    src = _without_partial(_current(p, op.inputs[0]))
    dims = tuple(d if (window[i] == 1 and strides[i] == 1 and tuple(padding[i]) == (0, 0)) else ()
                 for i, d in enumerate(src.dims))
    sh = Sharding(dims)
    return [sh for _ in op.inputs], [sh for _ in op.outputs], dict(op.params)


def _gather(p: _Partitioner, op: Op) -> Plan | None:
    """Gathers: the result is split like the indices; batching dims (take_along_axis) split
    operand and indices alike; window dims taken whole keep the table's split. A table split
    along the one dimension it is indexed on (a vocab-split embedding or log-probabilities) is
    gathered locally with masked indices, leaving a partial sum (compiler/shard_masked.py)."""
    dn = op.params["dimension_numbers"]
    idx = _without_partial(_current(p, op.inputs[1]))
    src = _without_partial(_current(p, op.inputs[0]))
    out_rank = len(op.outputs[0].shape)
    batch_out = [d for d in range(out_rank) if d not in dn.offset_dims]
    idx_batch = [d for d in range(len(op.inputs[1].shape)) if d != len(op.inputs[1].shape) - 1]
    if len(batch_out) != len(idx_batch):
        return None
    out_dims: list[Axes] = [() for _ in range(out_rank)]
    idx_dims = [() for _ in idx.dims]
    for o, i in zip(batch_out, idx_batch):
        out_dims[o] = idx_dims[i] = idx.dims[i]
    operand: list[Axes] = [() for _ in op.inputs[0].shape]
    for od, idim in zip(dn.operand_batching_dims, dn.start_indices_batching_dims):
        operand[od] = idx_dims[idim]
    used = {a for d in out_dims for a in d}
    shape, sizes = op.inputs[0].shape, op.params["slice_sizes"]
    window = [d for d in range(len(shape)) if d not in dn.collapsed_slice_dims and d not in dn.operand_batching_dims]
    for od, d in zip(dn.offset_dims, window):
        if src.dims[d] and sizes[d] == shape[d] and not set(src.dims[d]) & used:
            operand[d] = out_dims[od] = src.dims[d]
            used |= set(src.dims[d])
    params = dict(op.params)
    partial: frozenset[str] = frozenset()
    indexed = [d for d in dn.collapsed_slice_dims
               if src.dims[d] and d in dn.start_index_map and d not in dn.operand_batching_dims and not set(src.dims[d]) & used]
    if len(indexed) == 1:
        d = indexed[0]
        operand[d] = src.dims[d]
        partial = frozenset(src.dims[d])
        params["_masked"] = (d, src.dims[d])
        p.masked_tables[(shape, d)] = src.dims[d]
    return [Sharding(tuple(operand)), Sharding(tuple(idx_dims))], [Sharding(tuple(out_dims), partial)], params


def _scatter_add(p: _Partitioner, op: Op) -> Plan | None:
    """Scatter-adding split updates into a whole table leaves a partial sum over the updates'
    split axes (embedding gradients); batching dims keep their split in the result instead. The
    gradient of a masked gather (a table the program gathered from along a split dimension)
    scatters into that split table with masked indices, keeping the split."""
    dn = op.params["dimension_numbers"]
    upd = _without_partial(_current(p, op.inputs[2]))
    idx = _without_partial(_current(p, op.inputs[1]))
    window = set(dn.update_window_dims)
    if any(upd.dims[d] for d in window):
        return None
    scatter_dims = [d for d in range(len(upd.dims)) if d not in window]
    idx_dims = [d for d in range(len(idx.dims)) if d != len(idx.dims) - 1]
    if len(scatter_dims) != len(idx_dims):
        return None
    axes = [upd.dims[d] or idx.dims[i] for d, i in zip(scatter_dims, idx_dims)]
    upd = Sharding(tuple(axes[scatter_dims.index(d)] if d in scatter_dims else () for d in range(len(upd.dims))))
    new_idx: list[Axes] = [() for _ in idx.dims]
    for i, a in zip(idx_dims, axes):
        new_idx[i] = a
    operand: list[Axes] = [() for _ in op.inputs[0].shape]
    batched: set[str] = set()
    for od, idim in zip(getattr(dn, "operand_batching_dims", ()), getattr(dn, "scatter_indices_batching_dims", ())):
        operand[od] = new_idx[idim]
        batched |= set(new_idx[idim])
    used = {a for d in axes for a in d}
    params = dict(op.params)
    shape = op.inputs[0].shape
    for d in dn.inserted_window_dims:
        table = p.masked_tables.get((shape, d))
        if table and d in dn.scatter_dims_to_operand_dims \
                and not set(table) & used and shape[d] % p.split(table) == 0:
            operand[d] = table
            params["_masked"] = (d, table)
            break
    partial = frozenset(a for d in axes for a in d) - batched
    out = Sharding(tuple(operand), partial)
    return [Sharding(tuple(operand)), Sharding(tuple(new_idx)), upd], [out], params


def _pad(p: _Partitioner, op: Op) -> Plan:
    """Dimensions that are not padded keep their split (e.g. the batch of a ZeroPadding2D)."""
    src = _without_partial(_current(p, op.inputs[0]))
    cfg = op.params["padding_config"]
    dims = tuple(d if tuple(cfg[i]) == (0, 0, 0) else () for i, d in enumerate(src.dims))
    sh = Sharding(dims)
    return [sh, Sharding.replicated(len(op.inputs[1].shape))], [sh], dict(op.params)


def _concatenate(p: _Partitioner, op: Op) -> Plan:
    """Concatenation keeps splits on the other dimensions (taken from the first operand)."""
    dim = op.params["dimension"]
    src = _without_partial(_current(p, op.inputs[0]))
    sh = Sharding(tuple(() if i == dim else d for i, d in enumerate(src.dims)))
    return [sh for _ in op.inputs], [sh], dict(op.params)


def _stack(p: _Partitioner, op: Op) -> Plan:
    """Stacking keeps the operands' splits (taken from the first) on the new array's other dims."""
    axis = op.params["axis"]
    src = _without_partial(_current(p, op.inputs[0]))
    dims = list(src.dims)
    dims.insert(axis, ())
    return [src for _ in op.inputs], [Sharding(tuple(dims))], dict(op.params)


def _unstack(p: _Partitioner, op: Op) -> Plan:
    """Unstacking (stack's transpose) keeps the splits of the dims that remain; the unstacked
    dim is gathered whole first."""
    axis = op.params["axis"]
    src = _without_partial(_current(p, op.inputs[0]))
    whole = Sharding(tuple(() if i == axis else d for i, d in enumerate(src.dims)))
    out = Sharding(tuple(d for i, d in enumerate(whole.dims) if i != axis))
    return [whole], [out for _ in op.outputs], dict(op.params)


def _tile(p: _Partitioner, op: Op) -> Plan:
    """Tiling keeps a split only on the dims it does not repeat."""
    reps = tuple(op.params["reps"])
    src = _without_partial(_current(p, op.inputs[0]))
    lead = len(reps) - len(src.dims)  # reps may add leading dims
    dims = tuple(() if r != 1 or i < lead else src.dims[i - lead] for i, r in enumerate(reps))
    keep = Sharding(tuple(d if reps[lead + i] == 1 else () for i, d in enumerate(src.dims)))
    return [keep], [Sharding(dims)], dict(op.params)


def _dynamic_update_slice(p: _Partitioner, op: Op) -> Plan:
    """Writing a block into an array (a KV cache, a scan's stacked results): dimensions the block
    covers whole keep their split on both; the others are whole. The start indices are scalars."""
    operand, update = op.inputs[0], op.inputs[1]
    src = _without_partial(_current(p, operand))
    dims = tuple(d if update.shape[i] == operand.shape[i] else () for i, d in enumerate(src.dims))
    sh = Sharding(dims)
    return [sh, sh] + [Sharding.replicated(len(v.shape)) for v in op.inputs[2:]], [sh], dict(op.params)


def _dynamic_slice(p: _Partitioner, op: Op) -> Plan:
    """Reading a block: dimensions read whole keep their split."""
    operand = op.inputs[0]
    src = _without_partial(_current(p, operand))
    sizes = tuple(op.params["slice_sizes"])
    dims = tuple(d if sizes[i] == operand.shape[i] else () for i, d in enumerate(src.dims))
    sh = Sharding(dims)
    local = p.local_shape(operand.shape, sh)
    params = dict(op.params, slice_sizes=tuple(local[i] if dims[i] else sizes[i] for i in range(len(dims))))
    return [sh] + [Sharding.replicated(len(v.shape)) for v in op.inputs[1:]], [sh], params


def _scan(p: _Partitioner, op: Op) -> Plan | None:
    """Shard a scan's body like any graph: consts and carries keep their shardings (a carry's
    result is resharded to its starting sharding at the end of each iteration), xs and ys are
    split like one iteration's slice (their leading, scanned dimension stays whole)."""
    nc, nk = int(op.params["num_consts"]), int(op.params["num_carry"])
    body = op.subgraphs["body"]
    ins = [_without_partial(_current(p, v)) for v in op.inputs]
    xs = [Sharding(((),) + sh.dims[1:]) for sh in ins[nc + nk:]]
    ins = ins[:nc + nk] + xs
    body_in = ins[:nc + nk] + [Sharding(sh.dims[1:]) for sh in xs]
    inner = _Partitioner(p.mesh)
    inner.run(body, body_in)
    outs = []
    x_slices = [(v.shape, sh) for v, sh in zip(body.inputs[nc + nk:], body_in[nc + nk:])]
    for i, v in enumerate(body.outputs):
        if i < nk:  # carry: back to its starting sharding
            target = body_in[nc + i]
        else:
            # a stacked result shaped like a stacked input (per-layer weight gradients in the
            # backward scan) is split like it; otherwise it keeps the split it was computed with
            like = [sh for shape, sh in x_slices if shape == v.shape]
            target = like[0] if like else _without_partial(inner.place(v).sharding)
        outs.append(inner.reshard(v, target, op.where))
        inner.env[v.id] = _Placed(target, outs[-1])
    local_inputs = [inner.env[v.id].local for v in body.inputs]
    sub = Graph(local_inputs, outs, inner.ops)
    out_sh = body_in[nc:nc + nk] + [Sharding(((),) + inner.env[v.id].sharding.dims) for v in body.outputs[nk:]]
    params = dict(op.params)
    return ins, out_sh, params | {"_sharded_body": sub}


# The SPMD rule for each rule name a primitive's entry gives (ir/primitives.py: `shard`);
# "replicate" (no rule: the op runs on whole arrays) and "manual" (shard_map) are not here.
SHARDING_RULES: dict[str, Callable[[_Partitioner, Op], Plan | None]] = {
    "elementwise": _elementwise,
    "sharding_constraint": _sharding_constraint,
    "broadcast": _broadcast,
    "transpose": _transpose,
    "reshape": _reshape,
    "squeeze": _squeeze,
    "slice": _slice,
    "pad": _pad,
    "concatenate": _concatenate,
    "stack": _stack,
    "unstack": _unstack,
    "tile": _tile,
    "dynamic_slice": _dynamic_slice,
    "dynamic_update_slice": _dynamic_update_slice,
    "reduce": _reduce,
    "dot": _dot,
    "conv": _conv,
    "window": _window,
    "gather": _gather,
    "scatter_add": _scatter_add,
    "scan": _scan,
}


def shard_graph(graph: Graph, mesh_axes: dict[str, int], in_specs: list[Any]) -> ShardedGraph:
    """Partition `graph` for a mesh: `in_specs` has one PartitionSpec (or None) per input."""
    p = _Partitioner(mesh_axes)
    in_shardings = [sharding_from_spec(s, len(v.shape)) for v, s in zip(graph.inputs, in_specs)]
    local_inputs = p.run(graph, in_shardings)
    outs = []
    out_shardings = []
    for v in graph.outputs:
        target = Sharding(p.place(v).sharding.dims)  # results are never left as unreduced sums
        outs.append(p.reshard(v, target))
        out_shardings.append(target)
    collectives = [op for op in p.ops if category_of(op.prim) is Category.COLLECTIVE]
    return ShardedGraph(Graph(local_inputs, outs, p.ops), dict(mesh_axes), in_shardings, out_shardings, collectives)


def device_coords(device: int, mesh_axes: dict[str, int]) -> dict[str, int]:
    """Mesh coordinates of a device index (row-major over the mesh axes in order)."""
    coords = {}
    for name, size in reversed(list(mesh_axes.items())):
        coords[name] = device % size
        device //= size
    return coords


def axes_index(coords: dict[str, int], axes: Axes, mesh_axes: dict[str, int]) -> int:
    idx = 0
    for a in axes:
        idx = idx * mesh_axes[a] + coords[a]
    return idx


def local_block(global_array: np.ndarray, sh: Sharding, coords: dict[str, int], mesh_axes: dict[str, int]) -> np.ndarray:
    """This device's block of a global array."""
    index = []
    for size, axes in zip(np.shape(global_array), sh.dims):
        n = math.prod(mesh_axes[a] for a in axes)
        k = axes_index(coords, axes, mesh_axes)
        step = size // n
        index.append(slice(k * step, (k + 1) * step))
    return np.asarray(global_array)[tuple(index)]
