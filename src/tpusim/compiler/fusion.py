"""Fusion pass: group ops into kernels the way XLA's TPU fusion does, in spirit.

- A matmul/convolution takes per-element work on its result into its epilogue (bias add,
  batch-norm scale/shift, activation, residual add): the result tile is finished in VMEM and
  written to HBM once.
- Chains of elementwise, movement and reduction ops become one loop kernel; a value produced
  by a reduction is consumed in a later kernel (it needs the whole reduction first).
- Cheap ops whose inputs are all parameters/inputs (broadcast of a bias, reshape of a BN
  scale) are computed inside each kernel that needs them, not materialized.
- A cheap elementwise value made in an earlier loop kernel is recomputed in a later one that
  needs it (from that kernel's own inputs) rather than written to HBM and read back, when
  recomputing reads fewer bytes than the write and the read it saves: XLA duplicates such
  producers into each consumer fusion (layer norm's `x - mean` is computed twice, never
  stored). A matmul/conv takes such producers of its operands as a prologue: softmax's
  division by the row sum is done on the operand blocks of the `probs @ v` matmuls (forward
  and backward), so the normalized T x T matrix never exists in HBM, as in XLA's TPU fusions.
- After grouping, three whole-graph passes do what XLA's multi-output fusions do: a kernel
  remakes a value from arrays it reads anyway instead of reading it (ReLU masks); a wide value
  every reader casts to bf16 is stored in bf16 by its maker; and sibling loop kernels that
  read the same array become one kernel.
- Windowed reductions, gathers/scatters and control flow stay kernels of their own; loop and
  branch bodies are fused recursively.

What one kernel may hold depends on the device's compiler, so the device model hands the pass
its `FusionRules`: XLA:TPU's (the default, everything above) or XLA:GPU's, where a GEMM is a
cuBLAS call (an elementwise epilogue, no reductions, operands read as stored) and a row
normalization (softmax, layer norm) is one Triton kernel that keeps its rows on chip.

The result is a Graph whose ops are `fusion` ops (kind matmul/conv/loop, with the fused ops as
a nested graph) or single unfused ops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from tpusim.ir.graph import Fusion, Graph, Op, Value
from tpusim.ir.opset import FUSIBLE, PER_ELEMENT, Category
from tpusim.ir.primitives import PRIMITIVES, category_of, is_epilogue


# A matmul/conv fuses a producer of its operand even at equal HBM cost (give or take the
# row vectors a softmax or norm gradient broadcasts): XLA:TPU fuses elementwise producers into
# dot operands, so softmax-gradient T x T matrices are never stored. A modelling choice.
MXU_OPERAND_TIE = 1.05

@dataclass(frozen=True)
class FusionRules:
    """What one kernel may hold on a device, as its compiler fuses. The defaults are XLA:TPU's;
    a device model gives its own (`DeviceTimer.fusion_rules`), so the kernels the compiler
    forms are the ones that device runs.

    - `epilogue_prims`: the primitives a matmul/conv epilogue may apply to its result tile
      (None: any per-element op, and whole loop kernels that read the result, reductions
      included: XLA:TPU's multi-output convolution fusions). cuBLAS's epilogue scales, adds a
      bias or an addend, applies an activation, converts and writes in any layout; a masking
      select, a comparison or a reduction is a kernel of its own.
    - `operand_prologues`: a matmul computes cheap producers of its operands on their blocks
      instead of reading them stored (XLA:TPU; cuBLAS reads its operands as stored).
    - `row_elements`: a reduction over the last axis whose rows (padded to a power of two) have
      at most this many elements keeps each row on chip, so the kernel that reduces it also uses
      the result (softmax's max, sum and division in one pass: XLA:GPU's Triton normalization
      fusion). Only unary ops, binary ops with a splat operand and reshapes may lead into it;
      any other producer is stored by a kernel of its own. 0: a reduction's result is always
      used by a later kernel (XLA:TPU)."""

    epilogue_prims: frozenset[str] | None = None
    operand_prologues: bool = True
    row_elements: int = 0


XLA_TPU = FusionRules()


@dataclass
class _Group:
    kind: str  # "matmul" | "conv" | "loop" | "single"
    ops: list[Op] = field(default_factory=list)
    anchor: Op | None = None
    local: set[int] = field(default_factory=set)  # value ids computed inside
    reduce_outs: set[int] = field(default_factory=set)
    # Row kernels (FusionRules.row_elements): reduction results the group itself goes on to use,
    # and whether it may still become one (every op before its first reduction trivial).
    row_outs: set[int] = field(default_factory=set)
    row_ok: bool = True


def is_immediate(v: Value) -> bool:
    """Scalars baked into the kernel code rather than read from HBM."""
    return v.is_const and v.size <= 1


def fuse(graph: Graph, rules: FusionRules = XLA_TPU) -> Graph:
    """Group `graph`'s ops into kernels as `rules` allow (see module docstring). Returns a new
    Graph.

    A matmul/conv kernel writes one result the size of its product (XLA's output fusions have
    one such root): where an epilogue would leave two (ReLU's output and its derivative mask;
    a softmax gradient's two scaled copies of dP), grouping runs again with those epilogues
    kept out, so the raw product is stored once and each reader recomputes what it needs."""
    groups = _group(graph, frozenset(), rules)
    split = _split_epilogues(groups, graph.outputs)
    if split:
        groups = _group(graph, split, rules)
    groups = _recompute_from_reads(_live(groups, graph.outputs))
    groups = _store_narrow(_live(groups, graph.outputs), graph.outputs)
    groups = _merge_siblings(_live(groups, graph.outputs))
    groups = _merge_into_outputs(_live(groups, graph.outputs), graph.outputs, rules.epilogue_prims)
    return Graph(list(graph.inputs), list(graph.outputs), _emit(groups, graph.outputs))


# How many kernels ahead a loop kernel looks for a sibling that reads the same array. A
# modelling choice (XLA's sibling fusion looks at all consumers of an operand).
SIBLING_WINDOW = 8


def _merge_siblings(groups: list[_Group]) -> list[_Group]:
    """Sibling multi-output fusion: two loop kernels that read the same large array and do not
    feed each other become one kernel that reads it once (the two batch-norm gradients of a
    ResNet projection block, both made from the block's output gradient, as XLA fuses them;
    batch norm's two reductions over one conv output). The earlier kernel moves to the later
    one's place when nothing in between reads it, else the later one moves up to the earlier
    one's place when it reads nothing made in between."""
    merged: set[int] = set()
    for ai, a in enumerate(groups):
        if a.kind != "loop" or ai in merged:
            continue
        a_reads = {v.id: v for v in _ordered_reads(a)}
        a_outs = {o.id for op in a.ops for o in op.outputs}
        biggest = max((v.size for v in a_reads.values()), default=0)
        a_needed = False  # a kernel after `a` reads its results: `a` cannot move past it
        made_between: set[int] = set()
        for bi in range(ai + 1, min(len(groups), ai + 1 + SIBLING_WINDOW)):
            b = groups[bi]
            b_inputs = {v.id for op in b.ops for v in op.inputs if v.id not in b.local}
            if b_inputs & a_outs or b.kind != "loop" or bi in merged:
                a_needed |= bool(b_inputs & a_outs)
                made_between.update(o.id for op in b.ops for o in op.outputs)
                continue
            shared = [v for v in _ordered_reads(b) if v.id in a_reads and v.size * 8 >= biggest]
            if shared and not a_needed:
                _join(a, b, into=b)
                merged.add(ai)
                break
            if shared and not (b_inputs & made_between):
                _join(a, b, into=a)
                merged.add(bi)
                a_outs |= {o.id for op in b.ops for o in op.outputs}
                continue
            made_between.update(o.id for op in b.ops for o in op.outputs)
    return [g for gi, g in enumerate(groups) if gi not in merged]


def _join(first: _Group, second: _Group, into: _Group) -> None:
    """Make `into` (one of the two) the kernel doing both: `first`'s ops, then `second`'s."""
    in_first = {id(op) for op in first.ops}
    into.ops = first.ops + [op for op in second.ops if id(op) not in in_first]
    into.local = first.local | second.local
    into.reduce_outs = first.reduce_outs | second.reduce_outs
    into.row_outs = first.row_outs | second.row_outs


def _recompute_from_reads(groups: list[_Group]) -> list[_Group]:
    """A kernel that reads a value it could compute from values it reads anyway (and small
    ones: batch-norm statistics) computes it instead: a ReLU's derivative mask is remade from
    the pre-activation the batch-norm gradient next to it reads, as XLA's backward fusions do,
    so the forward pass never stores it. Only cheap elementwise producers are duplicated."""
    producer: dict[int, tuple[int, Op]] = {}
    for gi, g in enumerate(groups):
        if g.kind == "single":
            continue
        for op in g.ops:
            if op is g.anchor:
                continue
            for o in op.outputs:
                producer.setdefault(o.id, (gi, op))

    def cone_of(v: Value, avail: set[int], ref: int, before: int, depth: int, out: list[Op]) -> bool:
        if v.id in avail or is_immediate(v):
            return True
        made = producer.get(v.id)
        if made is None or made[0] >= before or v.id in groups[made[0]].reduce_outs:
            # a stored value: fine to read only if it is small beside the one it replaces
            return v.size * 8 <= ref and (made is None or made[0] < before)
        op = made[1]
        if depth > 12 or not is_epilogue(op.prim):
            return v.size * 8 <= ref
        if not all(cone_of(u, avail, ref, before, depth + 1, out) for u in op.inputs):
            return False
        if all(op is not o for o in out):
            out.append(op)
        return True

    for ri, r in enumerate(groups):
        if r.kind == "single":
            continue
        changed = False
        reads = _ordered_reads(r)
        read_ids = {v.id for v in reads}
        for v in reads:
            avail = (read_ids - {v.id}) | r.local
            cone: list[Op] = []
            made = producer.get(v.id)
            if made is None or made[0] >= ri or v.size < 8 * 128:
                continue
            if not cone_of(v, avail, v.size, ri, 0, cone) or not cone:
                continue
            new_reads = {u.id for op in cone for u in op.inputs} - avail - {o.id for op in cone for o in op.outputs}
            if sum(u.nbytes for op in cone for u in op.inputs if u.id in new_reads) >= v.nbytes:
                continue
            r.ops = cone + r.ops
            r.local.update(o.id for op in cone for o in op.outputs)
            read_ids = (read_ids - {v.id}) | new_reads
            changed = True
        if changed:
            r.ops = _topological(r.ops)
    return groups


def _ordered_reads(group: _Group) -> list[Value]:
    seen: dict[int, Value] = {}
    for op in group.ops:
        for v in op.inputs:
            if v.id not in group.local:
                seen.setdefault(v.id, v)
    return list(seen.values())


def _topological(ops: list[Op]) -> list[Op]:
    """`ops` reordered so every op follows the ops (in the list) that make its inputs; stable."""
    made = {o.id: i for i, op in enumerate(ops) for o in op.outputs}
    done: set[int] = set()
    out: list[Op] = []
    for start in range(len(ops)):
        stack = [start]
        while stack:
            i = stack[-1]
            if i in done:
                stack.pop()
                continue
            waiting = [j for v in ops[i].inputs if (j := made.get(v.id)) is not None and j != i and j not in done]
            if waiting:
                stack.extend(waiting)
                continue
            done.add(i)
            out.append(ops[i])
            stack.pop()
    return out


def _narrowing_cone(group: _Group, wide: Value) -> tuple[list[Op], Value, set[int]] | None:
    """In `group`, which reads the exported value `wide` from HBM: the cheap elementwise ops
    that lead from `wide` to one narrowing convert (a mixed-precision gradient summed in f32,
    then cast to bf16 for the conv that reads it), if everything the group does with `wide`
    goes through that convert and the ops' other inputs are small values read from outside.
    Returns (ops, narrow, ids of those other inputs)."""
    local_readers: dict[int, list[Op]] = {}
    for op in group.ops:
        for v in op.inputs:
            local_readers.setdefault(v.id, []).append(op)
    cone: list[Op] = []
    frontier, seen = [wide], {wide.id}
    while frontier:
        v = frontier.pop()
        for op in local_readers.get(v.id, []):
            if any(o.id in seen for o in op.outputs):
                continue
            if op is group.anchor or not is_epilogue(op.prim):
                return None
            cone.append(op)
            narrows = (op.prim == "convert_element_type" and op.outputs[0].nbytes < op.inputs[0].nbytes)
            for o in op.outputs:
                seen.add(o.id)
                if not narrows:
                    frontier.append(o)
    converts = [op for op in cone if op.prim == "convert_element_type" and op.outputs[0].nbytes < op.inputs[0].nbytes]
    if len(converts) != 1 or converts[0].outputs[0].shape != wide.shape:
        return None
    narrow = converts[0].outputs[0]
    # the cone's other inputs: small values (a bias, a scale) from outside the group, or
    # broadcasts of them made inside it (which go along with the cone)
    made_by = {o.id: op for op in group.ops for o in op.outputs}
    others: set[int] = set()
    pending = [v for op in cone for v in op.inputs if v.id not in seen and v.id != wide.id]
    while pending:
        v = pending.pop()
        if is_immediate(v) or v.id in seen or v.id in others:
            continue
        if v.id not in group.local:
            if v.size * 8 > wide.size:
                return None
            others.add(v.id)
            continue
        op = made_by[v.id]
        if not is_epilogue(op.prim):
            return None
        cone.append(op)
        seen.update(o.id for o in op.outputs)
        pending.extend(op.inputs)
    order = {id(op): i for i, op in enumerate(group.ops)}
    return sorted(cone, key=lambda op: order[id(op)]), narrow, others


def _store_narrow(groups: list[_Group], graph_outputs: list[Value]) -> list[_Group]:
    """Store a value in the narrow dtype its readers use: where every kernel that reads a wide
    (f32) value from HBM only casts it to bf16 (after cheap elementwise work, the same in each:
    mixed precision's f32 gradient sums feeding bf16 convs and bias gradients), the kernel that
    makes it does the cast and writes the bf16 value instead, as XLA's multi-output loop
    fusions do; the f32 value never reaches HBM."""
    out_ids = {v.id for v in graph_outputs}
    owner = {o.id: gi for gi, g in enumerate(groups) for op in g.ops for o in op.outputs}
    read = _read_outside(groups)
    for gi, g in enumerate(groups):
        if g.kind != "loop":
            continue
        for wide in [o for op in g.ops for o in op.outputs]:
            if wide.id in out_ids or wide.id in g.reduce_outs or wide.size < 8 * 128:
                continue
            readers = sorted(read.get(wide.id, set()) - {gi})
            if not readers:
                continue
            cones = [_narrowing_cone(groups[ri], wide) for ri in readers]
            if any(c is None for c in cones) or len({c[1].id for c in cones}) != 1:  # type: ignore[index]
                continue
            ops, narrow, others = cones[0]  # type: ignore[misc]
            if any(owner.get(i, -1) > gi or i in g.reduce_outs for i in others):
                continue
            for ri, (cone, _, _) in zip(readers, cones):  # type: ignore[misc]
                r = groups[ri]
                drop = {id(op) for op in cone}
                r.ops = [op for op in r.ops if id(op) not in drop]
                r.local -= {o.id for op in cone for o in op.outputs}
            g.ops.extend(op for op in ops if not any(o.id in g.local for o in op.outputs))
            g.local.update(o.id for op in ops for o in op.outputs)
            for op in ops:
                for o in op.outputs:
                    owner[o.id] = gi
            read = _read_outside(groups)
    return groups


def _merge_into_outputs(groups: list[_Group], graph_outputs: list[Value],
                        allowed: frozenset[str] | None) -> list[_Group]:
    """Multi-output MXU fusions: a loop kernel that reads a matmul/conv result is computed in
    that kernel's epilogue, while the result tile is still in VMEM, as XLA:TPU's convolution
    output fusions do, when that saves HBM traffic and keeps one product-sized result: either
    it leaves only reductions and small values (batch-norm's mean, a bias gradient's sum), or
    it is the only reader of the product and writes one product-sized value itself (a residual
    gradient's sum, masked by the ReLU, with batch-norm's gradient sums). It must need no
    reduction of that kernel and no value made after it, and hold only `allowed` primitives
    (None: any)."""
    out_ids = {v.id for v in graph_outputs}
    makers: dict[int, list[int]] = {}  # value id -> the groups that make it (recomputed ones in several)
    for gi, g in enumerate(groups):
        for op in g.ops:
            for o in op.outputs:
                if gi not in makers.setdefault(o.id, [])[-1:]:
                    makers[o.id].append(gi)
    read_outside = _read_outside(groups)
    values = {v.id: v for g in groups for op in g.ops for v in op.outputs}
    merged: dict[int, int] = {}  # loop group index -> MXU group index it joins

    def exported(gi: int, g: _Group) -> list[Value]:
        return [o for op in g.ops for o in op.outputs
                if (read_outside.get(o.id, set()) - {gi} - {li for li, mi in merged.items() if mi == gi}) or o.id in out_ids]

    for li, lg in enumerate(groups):
        if lg.kind != "loop" or (allowed is not None and any(op.prim not in allowed for op in lg.ops)):
            continue
        inputs = {v.id for op in lg.ops for v in op.inputs if v.id not in lg.local}
        # the kernel each input is read from: the latest one before this that makes it
        owner = {i: max(g for g in makers[i] if g < li) for i in inputs if any(g < li for g in makers.get(i, ()))}
        # the product-sized results (raw, or finished by an epilogue) of matmuls/convs it reads
        products = {owner[i]: values[i] for i in inputs if i in owner and groups[owner[i]].kind in ("matmul", "conv")
                    and values[i].shape == groups[owner[i]].anchor.outputs[0].shape}  # type: ignore[union-attr]
        if not products:
            continue
        mi = max(products)  # the latest matmul/conv whose product it reads
        mg = groups[mi]
        product = products[mi]
        if any(i in mg.reduce_outs for i in inputs) or any(
                owner.get(i, -1) > mi and merged.get(owner[i], owner[i]) != mi for i in inputs):
            continue
        big_out = [o for o in exported(li, lg) if o.id not in lg.reduce_outs and o.size * 8 > product.size]
        if big_out:
            readers = read_outside.get(product.id, set()) - {mi}
            mxu_big = [o for o in exported(mi, mg) if o.size * 8 > product.size and o.id != product.id]
            if len(big_out) > 1 or readers != {li} or product.id in out_ids or mxu_big:
                continue
        elif not any(o.id in lg.reduce_outs for o in exported(li, lg)):
            continue
        mg.ops.extend(lg.ops)
        mg.local.update(lg.local)
        mg.reduce_outs.update(lg.reduce_outs)
        merged[li] = mi
    return [g for gi, g in enumerate(groups) if gi not in merged]


def _split_epilogues(groups: list[_Group], graph_outputs: list[Value]) -> frozenset[int]:
    """Ids of the epilogue ops of matmul/conv groups that would write more than one
    product-sized result."""
    read_outside = _read_outside(groups)
    out_ids = {v.id for v in graph_outputs}
    split: set[int] = set()
    for gi, g in enumerate(groups):
        if g.kind not in ("matmul", "conv"):
            continue
        size = g.anchor.outputs[0].size  # type: ignore[union-attr]
        big = {o.id for op in g.ops for o in op.outputs
               if o.size >= size and ((read_outside.get(o.id, set()) - {gi}) or o.id in out_ids)}
        if len(big) > 1:
            split.update(op.id for op in g.ops if op is not g.anchor)
    return frozenset(split)


def _read_outside(groups: list[_Group]) -> dict[int, set[int]]:
    """Value id -> indices of the groups that read it from outside themselves."""
    read: dict[int, set[int]] = {}
    for gi, g in enumerate(groups):
        for op in g.ops:
            for v in op.inputs:
                if v.id not in g.local:
                    read.setdefault(v.id, set()).add(gi)
    return read


def _group(graph: Graph, no_epilogue: frozenset[int], rules: FusionRules) -> list[_Group]:
    """One pass of grouping; ops in `no_epilogue` do not join a matmul/conv group."""
    groups: list[_Group] = []
    owner: dict[int, int] = {}  # value id -> index of the group that writes it to HBM
    pending: dict[int, Op] = {}  # value id -> deferred producer (pure function of free values)
    free_ids = {v.id for v in graph.inputs}
    n_readers: dict[int, int] = {}
    made_by = {o.id: op for op in graph.ops for o in op.outputs}
    for op in graph.ops:
        for v in {v.id: v for v in op.inputs}.values():
            n_readers[v.id] = n_readers.get(v.id, 0) + 1

    def is_free(v: Value) -> bool:
        return v.is_const or v.id in free_ids or v.id in pending

    def pull(group: _Group, v: Value) -> None:
        """Compute a deferred value (and its deferred inputs) inside `group`."""
        if v.id in group.local or v.id not in pending:
            return
        op = pending[v.id]
        for u in op.inputs:
            pull(group, u)
        group.ops.append(op)
        group.local.update(o.id for o in op.outputs)

    producer: dict[int, Op] = {}  # value id -> the grouped op that computes it

    def duplicable(group: _Group, v: Value, trivial_only: bool = False) -> Op | None:
        """The op making `v` in another kernel, if `group` may compute it again itself (only a
        trivial one where `group` keeps rows on chip: it reads any other producer stored)."""
        op = producer.get(v.id)
        if op is None or v.id in group.local or v.id not in owner:
            return None
        src = groups[owner[v.id]]
        if src is group or src.kind == "single" or op is src.anchor or v.id in src.reduce_outs:
            return None
        if trivial_only and not trivial(op):
            return None
        if is_epilogue(op.prim):
            return op
        if group.kind == "loop" and PRIMITIVES[op.prim].loop_indexing:
            return op  # a loop kernel reads a slice or pad of its input as cheaply as the input
        return None

    exported: set[int] = set()  # values already in HBM for some kernel other than their producer

    def stored_cost(v: Value) -> int:
        """HBM bytes of having `v` in HBM for one more reader: a read, plus the write if no
        other kernel reads it yet."""
        return v.nbytes if v.id in exported or v.id not in owner else 2 * v.nbytes

    def read_cost(group: _Group, v: Value, depth: int = 0, ref: int = 0,
                  trivial_only: bool = False) -> tuple[int, bool]:
        """(HBM bytes `group` spends to have `v`, whether that makes a kernel write a value of at
        least 1/8 of `ref` bytes it did not write before, such as an activation, rather than a
        batch-norm scale): none if local, else the cheaper of storing it and recomputing it from
        its own inputs."""
        if v.id in group.local or is_immediate(v):
            return 0, False
        if v.id in pending and group.kind == "loop":  # made in the loop from free values: only their reads cost
            costs = [read_cost(group, u, depth + 1, ref, trivial_only) for u in pending[v.id].inputs] if depth < 8 else []
            return sum(c for c, _ in costs), any(f for _, f in costs)
        store = (stored_cost(v), v.id in owner and v.id not in exported and 8 * v.nbytes >= ref)
        op = duplicable(group, v, trivial_only) if depth < 8 else None
        if op is None:
            return store
        costs = [read_cost(group, u, depth + 1, ref, trivial_only) for u in op.inputs]
        again = (sum(c for c, _ in costs), any(f for _, f in costs))
        return min(store, again)

    def recompute(group: _Group, v: Value, trivial_only: bool = False) -> None:
        """Duplicate cheap elementwise producers from other kernels into `group` where
        recomputing costs fewer HBM bytes than storing the value for this reader (for a dot's
        operand, no more, give or take MXU_OPERAND_TIE, if it stores nothing new)."""
        op = duplicable(group, v, trivial_only)
        if op is None:
            return
        costs = [read_cost(group, u, 1, v.nbytes, trivial_only) for u in op.inputs]
        cost, fresh, saved = sum(c for c, _ in costs), any(f for _, f in costs), stored_cost(v)
        if not (cost < saved or (group.kind != "loop" and not fresh and cost <= saved * MXU_OPERAND_TIE)):
            return
        for u in op.inputs:
            pull(group, u)  # deferred inputs are computed here, before the op that reads them
            recompute(group, u, trivial_only)
        group.ops.append(op)
        group.local.update(o.id for o in op.outputs)
        group.row_ok &= bool(group.row_outs) or trivial(op)

    def splat(v: Value) -> bool:
        """A constant or an input, or a broadcast of one (a scale, a bias)."""
        if v.is_const or v.id in free_ids:
            return True
        op = pending.get(v.id)
        return op is not None and op.prim in ("broadcast_in_dim", "convert_element_type") and splat(op.inputs[0])

    def trivial(op: Op) -> bool:
        """An op XLA:GPU's normalization fusion takes in front of its rows: a reshape, a unary
        per-element op, or a binary one with exactly one operand that is not a splat."""
        if op.prim in ("reshape", "squeeze"):
            return True
        n = len(op.inputs)
        return category_of(op.prim) in PER_ELEMENT and (n == 1 or (n == 2 and sum(not splat(v) for v in op.inputs) == 1))

    def row_reduction(op: Op) -> bool:
        """A reduction over the last axis whose padded rows fit on chip (`rules.row_elements`)
        and whose input is read again (a normalization's diamond: softmax's `x - max`); one
        whose input only it reads (a gradient's sum of products) is an ordinary reduction."""
        src = op.inputs[0]
        return (bool(rules.row_elements) and len(op.outputs) == 1 and bool(src.shape)
                and tuple(op.params.get("axes", ())) == (len(src.shape) - 1,)
                and 2 ** math.ceil(math.log2(max(src.shape[-1], 1))) <= rules.row_elements
                and read_again(src))

    def chain_input(op: Op) -> Value:
        """The operand a trivial op carries forward (its one that is not a splat)."""
        return next((u for u in op.inputs if not splat(u)), op.inputs[0])

    def read_again(v: Value) -> bool:
        """Whether `v`, or what it is made from through trivial ops read only on the way, is read
        by something else too (RMS norm's x, squared and then summed, is read again to scale)."""
        while n_readers.get(v.id, 0) <= 1:
            op = made_by.get(v.id)
            if op is None or not trivial(op):
                return False
            v = chain_input(op)
        return True

    def add(group: _Group, op: Op) -> None:
        if group.kind != "single":
            rows = bool(group.row_outs) or (group.row_ok and category_of(op.prim) is Category.REDUCE
                                            and row_reduction(op))
            for v in op.inputs:
                pull(group, v)
                if group.kind == "loop" or (op is group.anchor and rules.operand_prologues):
                    recompute(group, v, trivial_only=rows)
        exported.update(v.id for v in op.inputs if v.id not in group.local)
        for o in op.outputs:
            producer[o.id] = op
        group.ops.append(op)
        group.local.update(o.id for o in op.outputs)
        idx = groups.index(group) if group in groups else len(groups)
        for o in op.outputs:
            owner[o.id] = idx
        if category_of(op.prim) is Category.REDUCE:
            group.reduce_outs.update(o.id for o in op.outputs)
            if group.row_ok and row_reduction(op):
                group.row_outs.update(o.id for o in op.outputs)
            group.row_ok = bool(group.row_outs)
        elif not group.row_outs and not trivial(op):
            group.row_ok = False

    def store_front(v: Value) -> None:
        """Before a row kernel reads `v` made from free values: going back from `v` through
        trivial ops, the first other op's result is stored by a kernel of its own."""
        while v.id in pending and v.id not in owner:
            op = pending[v.id]
            if not trivial(op):
                materialize(v)
                del pending[v.id]
                groups[owner[v.id]].row_ok = False
                return
            v = chain_input(op)

    def materialize(v: Value) -> None:
        """A deferred value needed in HBM (by an unfused op or as an output): its own kernel."""
        if v.id in pending and v.id not in owner:
            g = _Group("loop")
            groups.append(g)
            pull(g, v)
            for op in g.ops:
                for o in op.outputs:
                    owner.setdefault(o.id, len(groups) - 1)

    def can_join(group: _Group, op: Op, cat: Category) -> bool:
        if group.kind == "single":
            return False
        if any(v.id in group.reduce_outs and v.id not in group.row_outs for v in op.inputs):
            return False
        if group.kind == "loop":
            # a row reduction starts a kernel of its own after a producer it cannot take
            return not (cat is Category.REDUCE and row_reduction(op) and not group.row_ok)
        if rules.epilogue_prims is not None:
            if op.prim not in rules.epilogue_prims:
                return False
            if op.prim in ("reshape", "squeeze"):  # a view of the result: written in its layout
                return op.id not in no_epilogue
        anchor_shape = group.anchor.outputs[0].shape  # type: ignore[union-attr]
        return cat in PER_ELEMENT and op.id not in no_epilogue and all(o.shape == anchor_shape for o in op.outputs)

    for op in graph.ops:
        cat = category_of(op.prim)
        if cat in FUSIBLE and cat is not Category.REDUCE and all(is_free(v) for v in op.inputs):
            for o in op.outputs:
                pending[o.id] = op
            continue
        if cat is Category.MXU:
            g = _Group("conv" if op.prim == "conv_general_dilated" else "matmul", anchor=op)
            groups.append(g)
            add(g, op)
            continue
        if cat in FUSIBLE:
            if cat is Category.REDUCE and row_reduction(op):
                store_front(op.inputs[0])
            producers = [owner[v.id] for v in op.inputs if v.id in owner]
            if producers:
                cand = groups[max(producers)]
                if can_join(cand, op, cat):  # type: ignore[arg-type]
                    add(cand, op)
                    continue
            g = _Group("loop")
            groups.append(g)
            add(g, op)
            continue
        for v in op.inputs:
            materialize(v)
        g = _Group("single", anchor=op)
        groups.append(g)
        add(g, _fuse_bodies(op, rules))
    for v in graph.outputs:
        materialize(v)
    return groups


def _fuse_bodies(op: Op, rules: FusionRules) -> Op:
    """A copy of a control op whose bodies are fused (the input graph is left untouched)."""
    if not op.subgraphs:
        return op
    return replace(op, subgraphs={k: fuse(g, rules) for k, g in op.subgraphs.items()}, id=op.id)


def _live(groups: list[_Group], graph_outputs: list[Value]) -> list[_Group]:
    """Drop the fused ops whose results nobody needs any more (every reader outside recomputes
    them), and the groups left empty, until nothing changes: dead work moves no bytes."""
    out_ids = {v.id for v in graph_outputs}
    while True:
        read_outside = _read_outside(groups)
        live_groups, changed = [], False
        for gi, g in enumerate(groups):
            if g.kind == "single":
                live_groups.append(g)
                continue
            needed = {o.id for op in g.ops for o in op.outputs
                      if (read_outside.get(o.id, set()) - {gi}) or o.id in out_ids}
            kept: list[Op] = []
            for op in reversed(g.ops):
                if op is g.anchor or any(o.id in needed for o in op.outputs):
                    kept.append(op)
                    needed.update(v.id for v in op.inputs)
            kept.reverse()
            if len(kept) != len(g.ops):
                changed = True
                if not kept or (g.anchor is not None and not any(
                        o.id in needed or (read_outside.get(o.id, set()) - {gi}) or o.id in out_ids
                        for o in g.anchor.outputs)):
                    continue
                g = replace(g, ops=kept, local={o.id for op in kept for o in op.outputs})
            live_groups.append(g)
        if not changed:
            return live_groups
        groups = live_groups


def _emit(groups: list[_Group], graph_outputs: list[Value]) -> list[Op]:
    """Turn groups into ops; a fusion's outputs are the values read outside it. A value that
    several kernels compute (a cheap producer recomputed by its readers) is written by the first
    of them only: the others keep their copy on chip, and every later reader reads that one."""
    read_outside = _read_outside(groups)
    out_ids = {v.id for v in graph_outputs}
    result: list[Op] = []
    exported: set[int] = set()
    for gi, g in enumerate(groups):
        if g.kind == "single":
            result.append(g.ops[0])
            exported.update(o.id for o in g.ops[0].outputs)
            continue
        produced = [o for op in g.ops for o in op.outputs]
        outs, seen = [], set(exported)
        for o in produced:
            if o.id in seen:
                continue
            seen.add(o.id)
            if (read_outside.get(o.id, set()) - {gi}) or o.id in out_ids:
                outs.append(o)
        exported.update(o.id for o in outs)
        ins, seen = [], set()
        for op in g.ops:
            for v in op.inputs:
                if v.id not in g.local and v.id not in seen and not is_immediate(v):
                    seen.add(v.id)
                    ins.append(v)
        body = Graph(ins, outs, g.ops)
        anchor = g.anchor
        lead = anchor if anchor is not None else g.ops[-1]
        result.append(Fusion("fusion", ins, outs, {}, lead.where, None, {"fused": body}, lead.scope, kind=g.kind,
                             anchor=anchor))
    return result
