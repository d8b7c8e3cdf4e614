"""Recognize attention, so it can be priced as the fused (flash/splash) kernel TPU stacks run.

softmax(Q K^T) V written in plain JAX (or `jax.nn.dot_product_attention`) becomes a batched
matmul whose [.., Tq, Tk] score matrix goes through a row max and an exp. MaxText's splash
attention, Keras's flash attention and Pallas kernels never store those T x T matrices: each
block of scores lives in VMEM between the two matmuls. `score_shapes` finds the score shapes of
a graph (loop bodies included); the emitter then keeps every value of such a shape on chip
(no HBM traffic, no HBM buffer), forward and backward, while all the matmul and softmax
arithmetic stays. The numerics are unchanged.
"""

from __future__ import annotations

from tpusim.ir.graph import Graph, Op
from tpusim.ir.opset import PER_ELEMENT
from tpusim.ir.primitives import category_of

# Views of the same scores (jax.nn.dot_product_attention reshapes them for grouped heads).
_RESHAPES = {"reshape", "broadcast_in_dim", "transpose", "squeeze"}


def score_shapes(graph: Graph) -> set[tuple[int, ...]]:
    """Shapes [.., Tq, Tk] (and [.., Tk, Tq]) of attention score matrices in `graph`: a batched
    dot_general result that reaches, through elementwise ops and reshapes of its own size, both
    a max over its last dim and an exp (every shape it takes on the way counts)."""
    found: set[tuple[int, ...]] = set()
    _scan(graph, found)
    return found | {(*s[:-2], s[-1], s[-2]) for s in found}


def _scan(graph: Graph, found: set[tuple[int, ...]]) -> None:
    readers: dict[int, list[Op]] = {}
    for op in graph.ops:
        for v in op.inputs:
            readers.setdefault(v.id, []).append(op)
        for body in op.subgraphs.values():
            _scan(body, found)
    for op in graph.ops:
        if op.prim != "dot_general" or len(op.outputs[0].shape) < 3:
            continue
        size = op.outputs[0].size
        seen_max = seen_exp = False
        shapes: set[tuple[int, ...]] = set()
        frontier, visited = [op.outputs[0]], set()
        while frontier:
            v = frontier.pop()
            if v.id in visited:
                continue
            visited.add(v.id)
            shapes.add(v.shape)
            for r in readers.get(v.id, []):
                if r.prim == "reduce_max" and tuple(r.params.get("axes", ())) == (len(v.shape) - 1,):
                    seen_max = True
                elif r.prim == "exp":
                    seen_exp = True
                if category_of(r.prim) in PER_ELEMENT or r.prim in _RESHAPES:
                    frontier.extend(o for o in r.outputs if o.size == size)
        if seen_max and seen_exp:
            found.update(s for s in shapes if len(s) >= 3)
