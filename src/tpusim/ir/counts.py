"""FLOP and byte counts, derived from the graph itself.

Conventions (chosen to agree with XLA's cost_analysis wherever XLA is right):
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

import math
from dataclasses import dataclass, fields

from tpusim.ir.geometry import conv_geometry, dot_geometry, ragged_geometry
from tpusim.ir.graph import Graph, Op
from tpusim.ir.opset import Category, category_of


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


def _window_size(op: Op) -> int:
    dims = op.params.get("window_dimensions")
    return math.prod(dims) if dims else 1


def op_counts(op: Op) -> Counts:
    """Counts for one op, nested bodies included."""
    cat = category_of(op.prim)
    out_elems = sum(v.size for v in op.outputs)
    if op.prim == "dot_general":
        f = 2.0 * dot_geometry(op).macs
        return Counts(f, f, 0.0, _io_bytes(op))
    if op.prim == "ragged_dot_general":
        f = 2.0 * ragged_geometry(op).macs
        return Counts(f, f, 0.0, _io_bytes(op))
    if op.prim == "conv_general_dilated":
        g = conv_geometry(op)
        return Counts(2.0 * g.macs, 2.0 * g.macs_unpadded, 0.0, _io_bytes(op))
    if cat is Category.CONTROL:
        return _control_counts(op)
    if cat is Category.TRANSCENDENTAL:
        extra = 3.0 * out_elems if op.prim == "logistic" else 0.0
        return Counts(extra, extra, float(out_elems), _io_bytes(op))
    if cat is Category.ELEMENTWISE:
        free = op.prim in ("convert_element_type", "copy", "copy_p", "stop_gradient",
                           "optimization_barrier", "bitcast_convert_type", "reduce_precision", "name",
                           "sharding_constraint", "reshard")
        f = 0.0 if free else float(out_elems)
        if op.prim == "integer_pow":
            f = float(out_elems * max(1, abs(int(op.params["y"])) - 1))
        if any(v.dtype.kind == "c" for v in op.inputs):  # on (real, imaginary) pairs
            f *= 6.0 if op.prim in ("mul", "div") else 2.0
        return Counts(f, f, 0.0, _io_bytes(op))
    if cat is Category.REDUCE:
        f = float(max(0, op.inputs[0].size - out_elems))
        if op.prim == "reduce":  # lax.reduce with its own combiner: every op of it per combine
            body = op.params.get("jaxpr")
            combines = max(0, op.inputs[0].size - op.outputs[0].size)
            f = float(combines * max(1, len(getattr(getattr(body, "jaxpr", body), "eqns", ()) or ())))
        return Counts(f, f, 0.0, _io_bytes(op))
    if cat is Category.WINDOW:
        if op.prim.startswith("cum"):
            f = float(op.inputs[0].size)
        elif op.prim in ("select_and_gather_add", "select_and_scatter_add"):
            f = float(op.inputs[0].size * _window_size(op))
        else:
            f = float(out_elems * max(0, _window_size(op) - 1))
        return Counts(f, f, 0.0, _io_bytes(op))
    if cat is Category.GATHER:
        if op.prim.startswith("scatter") and op.prim != "scatter":
            f = float(op.inputs[2].size)
        elif op.prim == "fft":  # 5 n log2 n real operations per complex transform of length n
            lengths = [int(n) for n in op.params["fft_lengths"]]
            n = math.prod(lengths)
            transforms = max(op.inputs[0].size, op.outputs[0].size) / max(1, n)
            f = 5.0 * n * math.log2(max(n, 2)) * transforms
        elif op.prim == "sort":
            n = op.inputs[0].size
            last = op.inputs[0].shape[-1] if op.inputs[0].shape else 1
            f = float(n * max(1, math.ceil(math.log2(max(last, 2)))))
        else:
            f = 0.0
        return Counts(f, f, 0.0, _io_bytes(op))
    if cat is Category.RANDOM:
        # threefry2x32: 20 rounds of add/rotate/xor on 2 words per output pair (~5 ops a round)
        f = float(out_elems * 100) if op.prim == "threefry2x32" else 0.0
        return Counts(f, f, 0.0, _io_bytes(op))
    return Counts(0.0, 0.0, 0.0, _io_bytes(op))  # movement: bytes only


def _control_counts(op: Op) -> Counts:
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
