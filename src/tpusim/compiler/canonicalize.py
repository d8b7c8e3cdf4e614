"""Canonicalization: drop ops that do nothing (each primitive's entry says when: same-shape
reshapes, same-type converts, stop_gradient, optimization barriers) and ops whose results
nobody uses, make a transpose that only moves size-1 axes the reshape it is, and fold a zero
pad into the convolution that reads it (XLA's algebraic simplifier does all three), so later
passes see only real work."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from jax.extend.core import primitives as jprims

from tpusim.ir.graph import Graph, Op, Value
from tpusim.ir.primitives import PRIMITIVES, Identity


def _is_identity(op: Op) -> bool:
    """Whether `op` hands back its operands unchanged (its entry's `identity` rule)."""
    rule = PRIMITIVES[op.prim].identity
    if rule is Identity.NEVER or len(op.inputs) != len(op.outputs):
        return False
    return rule is Identity.ALWAYS or all(i.shape == o.shape and i.dtype == o.dtype
                                          for i, o in zip(op.inputs, op.outputs))


def _explicit_copy(op: Op, graph: Graph) -> bool:
    """`jnp.copy(x)` of a program input returned as an output: without donation XLA must write
    a new buffer, so the copy is real work (a copy kernel), not an identity."""
    return (op.prim == "copy" and any(v.id == op.inputs[0].id for v in graph.inputs)
            and any(v.id == op.outputs[0].id for v in graph.outputs))


def canonicalize(graph: Graph, top: bool = True) -> Graph:
    """Remove identity ops (nested bodies too), rewiring their users. Returns a new Graph;
    `graph` is not modified (a lowered program is compiled for many devices)."""
    alias: dict[int, Value] = {}

    def resolve(v: Value) -> Value:
        while v.id in alias:
            v = alias[v.id]
        return v

    ops: list[Op] = []
    producer: dict[int, Op] = {}
    for op in graph.ops:  # each op is copied, never edited: the input graph stays as it was
        op = replace(op, inputs=[resolve(v) for v in op.inputs],
                     subgraphs={k: canonicalize(g, top=False) for k, g in op.subgraphs.items()})
        producer.update((o.id, op) for o in op.outputs)
        if op.prim == "conv_general_dilated":
            _fold_input_pad(op, producer)
        if op.prim == "transpose" and _moves_only_unit_axes(op):
            op = replace(op, prim="reshape", jax_prim=jprims.reshape_p,
                         params={"new_sizes": tuple(op.outputs[0].shape), "dimensions": None, "sharding": None})
        if _is_identity(op) and not (top and _explicit_copy(op, graph)):
            for i, o in zip(op.inputs, op.outputs):
                alias[o.id] = i
            continue
        ops.append(op)
    outputs = [resolve(v) for v in graph.outputs]
    return Graph(list(graph.inputs), outputs, eliminate_dead_ops(ops, outputs))


def _moves_only_unit_axes(op: Op) -> bool:
    """A transpose whose axes longer than 1 keep their order: the same bytes in the same
    order, so a reshape (XLA makes it a bitcast)."""
    shape, perm = op.inputs[0].shape, [int(p) for p in op.params["permutation"]]
    moved = [p for p in perm if shape[p] != 1]
    return moved == sorted(moved)


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


def _is_zero(v: Value, producer: dict[int, Op]) -> bool:
    """Whether a scalar is a constant zero (through the converts JAX puts on literals)."""
    while not v.is_const and v.id in producer and producer[v.id].prim == "convert_element_type":
        v = producer[v.id].inputs[0]
    return v.is_const and v.size == 1 and float(np.asarray(v.const).reshape(())) == 0.0


def _fold_input_pad(conv: Op, producer: dict[int, Op]) -> None:
    """A convolution whose input is zero-padded on its spatial dims (Keras's ZeroPadding2D
    before a strided conv) reads the unpadded input with its own padding widened instead: the
    padded copy is never made (the pad stays only if something else reads it). Edits `conv`,
    a copy made by `canonicalize`."""
    pad = producer.get(conv.inputs[0].id)
    if pad is None or pad.prim != "pad" or not _is_zero(pad.inputs[1], producer):
        return
    dn = conv.params["dimension_numbers"]
    spatial = [int(d) for d in dn.lhs_spec[2:]]
    cfg = [tuple(int(x) for x in c) for c in pad.params["padding_config"]]
    dilation = conv.params.get("lhs_dilation") or (1,) * len(spatial)
    if any(cfg[d] != (0, 0, 0) for d in (int(dn.lhs_spec[0]), int(dn.lhs_spec[1]))):
        return
    if any(cfg[d][2] != 0 or cfg[d][0] < 0 or cfg[d][1] < 0 for d in spatial) or any(int(x) != 1 for x in dilation):
        return
    padding = tuple((int(lo) + cfg[d][0], int(hi) + cfg[d][1]) for d, (lo, hi) in zip(spatial, conv.params["padding"]))
    conv.params = {**conv.params, "padding": padding}
    conv.inputs = [pad.inputs[0], *conv.inputs[1:]]
