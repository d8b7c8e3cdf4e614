"""Rematerialization under memory pressure, as XLA's HloRematerialization pass does it.

XLA compiles for a memory limit (the device's HBM): when buffer assignment would exceed it, it
recomputes values instead of keeping them alive. tpusim does the same after fusion, only when
the peak does not fit: a stored value that is live across the peak, made by elementwise ops
(batch norm's output, an activation) from values that are stored anyway (the conv output it
normalizes, per-channel scales), is recomputed inside each kernel that reads it after the peak,
so its buffer dies at its last earlier reader. Biggest buffers first, until the program fits or
nothing is left to recompute. The price is the recomputation's extra HBM reads and VPU work,
which the estimate then includes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from tpusim.ir.graph import Graph, Op, Value
from tpusim.ir.primitives import is_epilogue

# Longest chain of elementwise ops recomputed for one value; XLA's remat also only
# recomputes cheap instructions. A modelling choice.
MAX_CHAIN = 16


@dataclass
class Remat:
    """What rematerialization did: the buffers it stopped keeping alive across the peak."""

    values: list[Value]
    peak_before: int
    peak_after: int

    @property
    def bytes(self) -> int:
        return sum(v.nbytes for v in self.values)


def _chain(v: Value, body: Graph) -> list[Op] | None:
    """The ops of a fusion body that make `v` from the body's inputs and outputs (values in
    HBM), if they are all elementwise or free reshapes/broadcasts; else None."""
    made = {o.id: op for op in body.ops for o in op.outputs}
    stored = {u.id for u in body.inputs} | {u.id for u in body.outputs}
    ops: list[Op] = []
    seen: set[int] = set()

    def visit(u: Value, top: bool) -> bool:
        if u.is_const or (not top and u.id in stored) or u.id in seen:
            return True
        op = made.get(u.id)
        if op is None or len(op.outputs) != 1:
            return False
        if not is_epilogue(op.prim):
            return False
        if not all(visit(w, False) for w in op.inputs):
            return False
        seen.add(u.id)
        ops.append(op)
        return len(ops) <= MAX_CHAIN

    return ops if visit(v, True) else None


def _frontier(chain: list[Op]) -> list[Value]:
    made = {o.id for op in chain for o in op.outputs}
    out, seen = [], set()
    for op in chain:
        for u in op.inputs:
            if u.id not in made and u.id not in seen and not (u.is_const and u.size <= 1):
                seen.add(u.id)
                out.append(u)
    return out


def _with_recompute(reader: Op, v: Value, chain: list[Op]) -> Op:
    """`reader` (a fusion) computing `v` itself from the chain's inputs instead of reading it."""
    body: Graph = reader.subgraphs["fused"]
    ins = [u for u in body.inputs if u.id != v.id]
    have = {u.id for u in ins}
    ins += [u for u in _frontier(chain) if u.id not in have]
    made = {o.id for op in chain for o in op.outputs}  # the body may already recompute part of it
    new_body = Graph(ins, list(body.outputs), list(chain) + [op for op in body.ops
                                                             if not all(o.id in made for o in op.outputs)])
    return replace(reader, inputs=ins, outputs=list(reader.outputs), subgraphs={**reader.subgraphs, "fused": new_body})


def _without_output(producer: Op, v: Value) -> Op:
    body: Graph = producer.subgraphs["fused"]
    outs = [o for o in producer.outputs if o.id != v.id]
    new_body = Graph(list(body.inputs), [o for o in body.outputs if o.id != v.id], list(body.ops))
    return replace(producer, inputs=list(producer.inputs), outputs=outs,
                   subgraphs={**producer.subgraphs, "fused": new_body})


def rematerialize(graph: Graph, peak_at: Callable[[Graph], tuple[int, int]], capacity: int,
                  rounds: int = 8) -> tuple[Graph, Remat]:
    """Recompute long-lived elementwise values after the peak until `graph` fits `capacity`.
    `peak_at(graph)` gives (peak bytes, index of the op at the peak) of a fused graph."""
    peak, at = peak_at(graph)
    first_peak, done = peak, []
    needed: set[int] = set()  # values some recomputation reads: they stay stored
    out_ids = {v.id for v in graph.outputs}
    for _ in range(rounds):
        if peak <= capacity:
            break
        ops = list(graph.ops)
        where = {o.id: i for i, op in enumerate(ops) for o in op.outputs}
        readers: dict[int, list[int]] = {}
        for i, op in enumerate(ops):
            for u in op.inputs:
                readers.setdefault(u.id, []).append(i)
        live_at_peak = {u.id for u in graph.inputs} | {u for u, rs in readers.items() if max(rs) >= at}
        candidates = []
        for i, op in enumerate(ops):
            if op.prim != "fusion" or i >= at:
                continue
            mine = {o.id for o in op.outputs}
            for v in op.outputs:
                late = [r for r in readers.get(v.id, []) if r >= at]
                if v.id in out_ids or not late or any(ops[r].prim != "fusion" for r in late):
                    continue
                chain = _chain(v, op.subgraphs["fused"])
                # Recomputing must not keep something else alive across the peak instead.
                if chain and all((where.get(u.id, -1) < i or u.id in mine) and
                                 (u.id in live_at_peak or 8 * u.nbytes <= v.nbytes) for u in _frontier(chain)):
                    candidates.append((v.nbytes, i, v, chain, late))
        if not candidates:
            break
        needed |= {u.id for _, _, _, chain, _ in candidates for u in _frontier(chain)}
        freed = 0
        for _, i, v, chain, late in sorted(candidates, key=lambda c: -c[0]):
            if freed >= peak - capacity:
                break
            for r in late:
                ops[r] = _with_recompute(ops[r], v, chain)
            if v.id not in needed and len(late) == len(readers[v.id]):
                ops[i] = _without_output(ops[i], v)  # nobody reads it any more: never written
            done.append(v)
            freed += v.nbytes
        graph = Graph(list(graph.inputs), list(graph.outputs), ops)
        peak, at = peak_at(graph)
    return graph, Remat(done, first_peak, peak)
