"""Recognize attention, so it can be priced as the fused (flash/splash) kernel TPU stacks run.

softmax(Q K^T) V written in plain JAX (or `jax.nn.dot_product_attention`) becomes a batched
matmul whose [.., Tq, Tk] score matrix goes through a row max and an exp. MaxText's splash
attention, Keras's flash attention and Pallas kernels never store those T x T matrices: each
block of scores lives in VMEM between the two matmuls. `score_shapes` finds the score shapes of
a graph (loop bodies included); the emitter then keeps every value of such a shape on chip
(no HBM traffic, no HBM buffer), forward and backward, while all the matmul and softmax
arithmetic stays. The numerics are unchanged.

`attention_regions` then groups the kernels such scores link into one fused kernel each, and
reads the mask when it is known at compile time (built from positions: causal, sliding
window): flash kernels visit only the blocks of keys a query block can see, so a causal
kernel does about half the work. The device model decides how to time a region.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from tpusim.compiler.static_value import static_value
from tpusim.ir.geometry import dot_geometry
from tpusim.ir.graph import Graph, Op, Value
from tpusim.ir.opset import PER_ELEMENT
from tpusim.ir.primitives import category_of
from tpusim.program.program import AttentionRegion, Kernel

# Query and key rows per block: FlashAttention-2/3's and cuDNN's tiles for head dim 128, and
# splash attention's default block sizes.
FLASH_BLOCK = 128
# A mask pattern larger than this many elements ([Tq, Tk] > 16K x 16K) is taken as dense.
_MASK_LIMIT = 1 << 28

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


def attention_regions(graph: Graph, kernels: list[Kernel], is_score: Callable[[Value], bool]) -> list[AttentionRegion]:
    """The fused attention kernels of one program level: kernels joined by score values
    (`is_score`) that stay on chip, each with the key blocks its static mask leaves."""
    made_by = {v.id: i for i, k in enumerate(kernels) for v in k.outputs}
    root = list(range(len(kernels)))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    members: set[int] = set()
    for i, k in enumerate(kernels):
        for v in k.inputs:
            if v.id in made_by and is_score(v):
                root[find(i)] = find(made_by[v.id])
                members |= {i, made_by[v.id]}
    groups: dict[int, list[int]] = {}
    for i in sorted(members):
        groups.setdefault(find(i), []).append(i)
    if not groups:
        return []
    producer = {o.id: op for op in graph.walk() for o in op.outputs}
    regions = [_region(tuple(idx), [kernels[i] for i in idx], producer, is_score) for idx in groups.values()]
    return [r for r in regions if r is not None]


def _region(idx: tuple[int, ...], kernels: list[Kernel], producer: dict[int, Op],
            is_score: Callable[[Value], bool]) -> AttentionRegion | None:
    # The first product is Q K^T (or, in a backward region, dO V^T): [matrices, Tq, Tk] scores.
    # Kernels linked only by score-shaped values and no product (a mask's pieces) are no region.
    first = next((k.anchor for k in kernels if k.anchor is not None and k.anchor.prim == "dot_general"), None)
    if first is None:
        return None
    g = dot_geometry(first)
    nq, nk = math.ceil(g.M / FLASH_BLOCK), math.ceil(g.N / FLASH_BLOCK)
    ops = [op for k in kernels for op in ([k.op, *k.fused.ops] if k.fused is not None else [k.op])]
    live = _live_blocks(ops, g.B * g.M * g.N, producer)
    if live is None or len(live) != nq:
        live = (float(nk),) * nq
    # Q K^T makes scores, and so does a backward's dO V^T.
    making_scores = sum(1 for k in kernels if k.anchor is not None and any(is_score(o) for o in k.outputs))
    return AttentionRegion(idx, g.B, live, nk, FLASH_BLOCK, backward=making_scores > 1)


def _live_blocks(ops: list[Op], size: int, producer: dict[int, Op]) -> tuple[float, ...] | None:
    """Key blocks per query block that hold a visible score, from a select between the scores
    (`size` elements, queries and keys its last two axes) and a fill whose predicate is static
    (the mask); None when there is none."""
    for op in ops:
        scores = op.outputs[0].shape
        if op.prim != "select_n" or len(op.inputs) != 3 or len(scores) < 2 or math.prod(scores) != size:
            continue
        fill = [static_value(c, producer, 1) is not None for c in op.inputs[1:]]
        if fill.count(True) != 1:
            continue
        which = static_value(op.inputs[0], producer, _MASK_LIMIT)
        if which is None:
            continue
        visible = which.astype(bool) if fill[0] else ~which.astype(bool)  # the scores' case is chosen
        pattern = (*visible.shape[:-2], *scores[-2:])
        return _block_counts(np.broadcast_to(visible, pattern)) if math.prod(pattern) <= _MASK_LIMIT else None
    return None


def _block_counts(visible: np.ndarray) -> tuple[float, ...]:
    """Per block of query rows, the blocks of keys with any visible score (mean over the
    leading axes)."""
    *lead, tq, tk = visible.shape
    b = FLASH_BLOCK
    padded = np.zeros((*lead, math.ceil(tq / b) * b, math.ceil(tk / b) * b), bool)
    padded[..., :tq, :tk] = visible
    blocks = padded.reshape(*lead, padded.shape[-2] // b, b, padded.shape[-1] // b, b).any(axis=(-3, -1))
    per_query_block = blocks.sum(axis=-1).reshape(-1, blocks.shape[-2]).mean(axis=0)
    return tuple(float(x) for x in per_query_block)
