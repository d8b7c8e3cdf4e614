"""Canonicalization: drop ops that do nothing (same-shape reshapes, same-type converts,
stop_gradient, optimization barriers) and ops whose results nobody uses, so later passes see
only real work."""

from __future__ import annotations

from tpusim.ir.graph import Graph, Op, Value

_IDENTITY_PRIMS = {"stop_gradient", "optimization_barrier", "copy", "copy_p", "sharding_constraint", "name"}


def _is_identity(op: Op) -> bool:
    if len(op.inputs) != len(op.outputs):
        return False
    if op.prim in _IDENTITY_PRIMS:
        return True
    if op.prim in ("reshape", "convert_element_type", "squeeze", "expand_dims") and len(op.inputs) == 1:
        src, dst = op.inputs[0], op.outputs[0]
        return src.shape == dst.shape and src.dtype == dst.dtype
    return False


def _explicit_copy(op: Op, graph: Graph) -> bool:
    """`jnp.copy(x)` of a program input returned as an output: without donation XLA must write
    a new buffer, so the copy is real work (a copy kernel), not an identity."""
    return (op.prim in ("copy", "copy_p") and any(v.id == op.inputs[0].id for v in graph.inputs)
            and any(v.id == op.outputs[0].id for v in graph.outputs))


def canonicalize(graph: Graph, top: bool = True) -> Graph:
    """Remove identity ops (nested bodies too), rewiring their users. Returns a new Graph."""
    alias: dict[int, Value] = {}

    def resolve(v: Value) -> Value:
        while v.id in alias:
            v = alias[v.id]
        return v

    ops: list[Op] = []
    for op in graph.ops:
        op.inputs = [resolve(v) for v in op.inputs]
        if op.subgraphs:
            op.subgraphs = {k: canonicalize(g, top=False) for k, g in op.subgraphs.items()}
        if _is_identity(op) and not (top and _explicit_copy(op, graph)):
            for i, o in zip(op.inputs, op.outputs):
                alias[o.id] = i
            continue
        ops.append(op)
    outputs = [resolve(v) for v in graph.outputs]
    return Graph(list(graph.inputs), outputs, eliminate_dead_ops(ops, outputs))


def eliminate_dead_ops(ops: list[Op], outputs: list[Value]) -> list[Op]:
    """Keep only ops that contribute to `outputs` (tpusim's ops have no side effects)."""
    live = {v.id for v in outputs}
    kept: list[Op] = []
    for op in reversed(ops):
        if any(o.id in live for o in op.outputs):
            kept.append(op)
            live.update(v.id for v in op.inputs)
    kept.reverse()
    return kept
