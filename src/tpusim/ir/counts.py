"""FLOP and byte counts, derived from the graph itself.

Conventions (chosen to agree with XLA's cost_analysis wherever XLA is right; each primitive's
rule is its entry's `work` in ir/primitives.py):
- a multiply-accumulate is 2 FLOPs; an elementwise op is 1 FLOP per output element;
  transcendental ops count as `transcendentals` (logistic also counts its 3 arithmetic FLOPs);
  a reduction costs (inputs - outputs) FLOPs; a window reduction (window - 1) per output.
- convolutions: `flops` counts every tap the MXU executes, padding included; `flops_xla`
  counts only taps on real input, as XLA does (so XLA under-counts padded convolutions).
- loops: body counts times the trip count (XLA counts a loop body once); cond: the costliest
  branch.
- bytes: every operand read plus every result written, before fusion (fusion reduces it; the
  compiled Program reports its own post-fusion HBM traffic).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from tpusim.ir.graph import Graph, Op
from tpusim.ir.primitives import PRIMITIVES


@dataclass
class Counts:
    flops: float = 0.0
    flops_xla: float = 0.0
    transcendentals: float = 0.0
    bytes: float = 0.0

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def scaled(self, k: float) -> "Counts":
        return Counts(*(getattr(self, f.name) * k for f in fields(self)))


def _io_bytes(op: Op) -> float:
    return float(sum(v.nbytes for v in op.inputs) + sum(v.nbytes for v in op.outputs))


def op_counts(op: Op) -> Counts:
    """Counts for one op (its entry's work rule, ir/primitives.py), nested bodies included."""
    rule = PRIMITIVES[op.prim].work
    if rule is None:
        return _control_counts(op)
    w = rule(op)
    return Counts(w.flops, w.flops if w.flops_xla is None else w.flops_xla, w.transcendentals, _io_bytes(op))


def _control_counts(op: Op) -> Counts:
    if op.prim == "fusion":
        return graph_counts(op.subgraphs["fused"])
    if op.prim == "cond":
        branches = [graph_counts(g) for g in op.subgraphs.values()]
        return max(branches, key=lambda c: c.flops + c.transcendentals + c.bytes)
    body = graph_counts(op.subgraphs["body"])
    trips = op.params.get("trip_count") or 1
    total = body.scaled(trips)
    if op.prim == "while" and "cond" in op.subgraphs:
        total = total + graph_counts(op.subgraphs["cond"]).scaled(trips + 1)
    return total


def graph_counts(graph: Graph) -> Counts:
    total = Counts()
    for op in graph.ops:
        total = total + op_counts(op)
    return total
