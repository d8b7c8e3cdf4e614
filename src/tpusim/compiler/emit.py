"""Emit the Program: one Kernel per op of the fused graph, with grid, block specs, per-step
work and post-fusion HBM traffic."""

from __future__ import annotations

import math
from typing import Callable

from tpusim.compiler.attention import attention_regions
from tpusim.compiler.layout import padded_bytes
from tpusim.compiler.tiling import mxu_hbm_traffic, plan_loop, plan_mxu
from tpusim.ir.counts import Counts, op_counts
from tpusim.ir.graph import Fusion, Graph, Op, Value
from tpusim.ir.opset import Category
from tpusim.ir.primitives import category_of
from tpusim.program.program import BlockSpec, Kernel, MxuPlan, Program, Step

# (candidate plan, its kernel's HBM bytes) -> seconds on the target device.
MatmulCost = Callable[[MxuPlan, int], float]


def _hbm(values: list[Value]) -> int:
    return sum(padded_bytes(v.shape, v.dtype) for v in values if not (v.is_const and v.size <= 1))


def _kernel_source(v: Value, fused: Graph, kernel_inputs: list[Value]) -> Value:
    """The kernel input an MXU operand is streamed from, through its fused prologue (a
    transpose, a convert, a softmax's division by a broadcast row sum: the largest input)."""
    producers = {o.id: op for op in fused.ops for o in op.outputs}
    ids = {k.id for k in kernel_inputs}
    while v.id not in ids and v.id in producers:
        srcs = [u for u in producers[v.id].inputs if not (u.is_const and u.size <= 1)]
        if not srcs:
            break
        v = max(srcs, key=lambda u: u.size)
    return v


def _fused_counts(op: Op) -> Counts:
    total = Counts()
    for inner in op.subgraphs["fused"].ops:
        total = total + op_counts(inner)
    return total


def _is_fusion(fused: Graph) -> bool:
    """Whether XLA would emit this loop kernel as a fusion rather than a bare instruction: more
    than one op (a broadcast constant counts), or a reduction."""
    return len(fused.ops) > 1 or any(v.is_const for op in fused.ops for v in op.inputs) or any(
        category_of(op.prim) is Category.REDUCE for op in fused.ops)


class ProgramBuilder:
    def __init__(self, mxu_shape: tuple[int, int], vmem_budget: int, tiles: tuple[int, int, int] | None = None,
                 cores: int = 1, vpu_ratio: float | None = None, on_chip_bytes: int = 0,
                 on_chip_shapes: frozenset[tuple[int, ...]] = frozenset(),
                 matmul_cost: MatmulCost | None = None) -> None:
        self.vpu_ratio = vpu_ratio
        # The device model's time of a matmul kernel for a candidate tiling (see plan_mxu).
        self.matmul_cost = matmul_cost
        # Fused attention keeps its score matrices (these shapes, from compiler.attention) in VMEM.
        self.on_chip_shapes = on_chip_shapes
        # TPU v1 keeps activations in its Unified Buffer: intermediate values up to this size
        # never cross the off-chip memory, which holds only the (int8) weights and the I/O.
        self.on_chip_bytes = on_chip_bytes
        self.io: set[int] = set()
        self.mxu_shape = mxu_shape
        self.vmem_budget = vmem_budget
        self.tiles = tiles
        self.cores = cores
        self.count = 0

    def build(self, graph: Graph) -> Program:
        self.io = {v.id for v in graph.inputs} | {v.id for v in graph.outputs}
        kernels = [self.kernel(op) for op in graph.ops]
        on_chip = {v.id for k in kernels for v in [*k.inputs, *k.outputs] if self.resident(v)}
        params = []
        seen = {v.id for v in graph.inputs}
        for k in kernels:
            for v in k.inputs:
                if v.is_const and v.id not in seen:
                    seen.add(v.id)
                    params.append(v)
        attention = attention_regions(graph, kernels, lambda v: v.id in on_chip and v.shape in self.on_chip_shapes)
        return Program(kernels, list(graph.inputs), list(graph.outputs), params, on_chip=on_chip, attention=attention)

    def resident(self, v: Value) -> bool:
        """Whether `v` stays in on-chip memory (v1's Unified Buffer; a fused attention's score
        blocks in VMEM) instead of HBM."""
        if v.role != "temp" or v.id in self.io:
            return False
        return bool(self.on_chip_bytes and v.nbytes <= self.on_chip_bytes) or v.shape in self.on_chip_shapes

    def _hbm(self, values: list[Value]) -> int:
        return _hbm([v for v in values if not self.resident(v) and v.memory != "host"])

    def _traffic(self, values: list[Value]) -> dict[int, int]:
        """HBM bytes moved per value id, each of `values` read or written once."""
        out: dict[int, int] = {}
        for v in values:
            b = self._hbm([v])
            if b:
                out[v.id] = out.get(v.id, 0) + b
        return out

    def _in_place_saving(self, ops: list[Op], inputs: list[Value], outputs: list[Value]) -> int:
        """HBM bytes a dynamic-update-slice does not move: it writes its block into the
        operand's buffer (XLA updates in place: a KV cache, a scan's stacked results), so neither
        the whole operand is read nor the whole result written, only the block."""
        ins, outs = {v.id for v in inputs}, {v.id for v in outputs}
        saved = 0
        for o in ops:
            if o.prim == "dynamic_update_slice" and o.inputs[0].id in ins and o.outputs[0].id in outs:
                saved += self._hbm([o.inputs[0], o.outputs[0]]) - self._hbm([o.inputs[1]])
        return max(0, saved)

    def _name(self, kind: str, scope: str) -> str:
        scope = scope.split("/")[-1] if scope else ""
        name = f"{scope}/{kind}.{self.count}" if scope else f"{kind}.{self.count}"
        self.count += 1
        return name

    def kernel(self, op: Op) -> Kernel:
        if isinstance(op, Fusion):
            if op.kind in ("matmul", "conv"):
                return self.mxu_kernel(op)
            return self.loop_kernel(op)
        return self.single_kernel(op)

    def mxu_kernel(self, op: Fusion) -> Kernel:
        anchor = op.anchor
        assert anchor is not None
        fused = op.subgraphs["fused"]
        lhs_v, rhs_v = (_kernel_source(v, fused, op.inputs) for v in anchor.inputs[:2])
        anchor_ids = {lhs_v.id, rhs_v.id}
        extra_in = [v for v in op.inputs if v.id not in anchor_ids]
        # What leaves the kernel is the fusion's outputs (the epilogue's result, not the raw
        # product it consumed in VMEM), each written once.
        side = self._hbm(extra_in) + self._hbm(list(op.outputs))
        side -= min(side, self._in_place_saving(fused.ops, list(op.inputs), list(op.outputs)))

        def operand_traffic(plan: MxuPlan) -> tuple[int, int]:
            lhs_t, rhs_t, _ = mxu_hbm_traffic(anchor, plan, (lhs_v, rhs_v))
            if self.resident(lhs_v):
                lhs_t = 0
            if self.resident(rhs_v):
                rhs_t = 0
            if plan.precision == "int8":  # int8 operands are stored as int8 (weights quantized once)
                lhs_t = lhs_t // max(1, lhs_v.dtype.itemsize)
                rhs_t = rhs_t // max(1, rhs_v.dtype.itemsize)
            return lhs_t, rhs_t

        cost = None
        if self.matmul_cost is not None:
            matmul_cost = self.matmul_cost
            cost = lambda p: matmul_cost(p, sum(operand_traffic(p)) + side)  # noqa: E731
        plan = plan_mxu(anchor, self.mxu_shape, self.vmem_budget, self.tiles, self.cores, (lhs_v, rhs_v), self.vpu_ratio,
                        cost=cost)
        lhs_t, rhs_t = operand_traffic(plan)
        ga = ("m", "n", "k")
        specs = [
            BlockSpec(lhs_v, (plan.tm, plan.tk), ("m", "k")),
            BlockSpec(rhs_v, (plan.tk, plan.tn), ("k", "n")),
        ]
        specs += [BlockSpec(v, v.shape, ("",) * len(v.shape)) for v in extra_in]
        specs += [BlockSpec(v, (plan.tm, plan.tn), ("m", "n"), "out") for v in op.outputs]
        at = fused.ops.index(anchor)
        computes = [o.prim for o in fused.ops if category_of(o.prim) is not Category.MOVEMENT]
        prologue = [o.prim for o in fused.ops[:at] if category_of(o.prim) is not Category.MOVEMENT]
        epilogue = computes[len(prologue) + 1:]
        block_flops = 2 * plan.tm * plan.tk * plan.tn * plan.passes
        steps = [
            Step("dma_in", f"lhs block {plan.tm}x{plan.tk}", plan.tm * plan.tk * lhs_v.dtype.itemsize),
            Step("dma_in", f"rhs block {plan.tk}x{plan.tn}", plan.tk * plan.tn * rhs_v.dtype.itemsize),
        ]
        if prologue:
            steps.append(Step("vpu", "prologue on operand blocks: " + ", ".join(prologue),
                              flops=(plan.tm + plan.tn) * plan.tk * len(prologue)))
        steps.append(Step("mxu", f"{plan.precision} x{plan.passes} {plan.tm}x{plan.tk}x{plan.tn} into f32 acc", flops=block_flops))
        if epilogue:
            steps.append(Step("vpu", "epilogue on last k step: " + ", ".join(epilogue), flops=plan.tm * plan.tn * len(epilogue)))
        steps.append(Step("dma_out", f"out block {plan.tm}x{plan.tn} on last k step", plan.tm * plan.tn * plan.out_itemsize))
        counts = _fused_counts(op)
        hbm = lhs_t + rhs_t + side
        counts.bytes = float(hbm)
        traffic = self._traffic(extra_in + list(op.outputs))
        for v, t in ((lhs_v, lhs_t), (rhs_v, rhs_t)):
            if t:
                traffic[v.id] = traffic.get(v.id, 0) + t
        return Kernel(self._name(op.kind, op.scope), op.kind, op, list(op.inputs), list(op.outputs),
                      plan.grid, ga, specs, steps, counts, hbm, op.where, plan, traffic=traffic)

    def loop_kernel(self, op: Op) -> Kernel:
        fused = op.subgraphs["fused"]
        values = list(op.inputs) + list(op.outputs)
        total = max((v.size for v in values), default=1)
        per_elem = sum(v.dtype.itemsize for v in values if v.size == total) or 4
        # XLA:TPU partitions fusions over a megacore chip's TensorCores; a lone elementwise
        # instruction it leaves unfused runs on one (see Kernel.megacore).
        # A reduction is always split (XLA's estimated cycles vs measured norms say so); an
        # elementwise fusion only once it has a block per core.
        megacore = _is_fusion(fused)
        reduces = any(category_of(o.prim) is Category.REDUCE for o in fused.ops)
        grid, block = plan_loop(total, per_elem, self.vmem_budget, self.cores if reduces else 1)
        rows = max(1, block // 128)
        specs = [BlockSpec(v, (rows, 128) if v.size == total else v.shape,
                           ("i", "") if v.size == total else ("",) * len(v.shape),
                           "out" if v in op.outputs else "in") for v in values]
        counts = _fused_counts(op)
        hbm = self._hbm(values)
        hbm -= min(hbm, self._in_place_saving(fused.ops, list(op.inputs), list(op.outputs)))
        counts.bytes = float(hbm)
        vpu_ops = [o.prim for o in fused.ops if category_of(o.prim) is not Category.MOVEMENT]
        steps = [
            Step("dma_in", f"{len(op.inputs)} input blocks", self._hbm(list(op.inputs)) // grid),
            Step("vpu", ", ".join(vpu_ops) or "data movement", flops=int((counts.flops + counts.transcendentals) // grid)),
            Step("dma_out", f"{len(op.outputs)} output blocks", self._hbm(list(op.outputs)) // grid),
        ]
        return Kernel(self._name("fusion", op.scope), "loop", op, list(op.inputs), list(op.outputs),
                      (grid,), ("i",), specs, steps, counts, hbm, op.where, megacore=megacore,
                      traffic=self._traffic(values))

    def single_kernel(self, op: Op) -> Kernel:
        cat = category_of(op.prim)
        ins = [v for v in op.inputs if not (v.is_const and v.size <= 1)]
        counts = op_counts(op)
        bodies: dict[str, Program] = {}
        megacore = False
        if cat is Category.CONTROL:
            kind = op.prim
            for name, g in op.subgraphs.items():
                bodies[name] = ProgramBuilder(self.mxu_shape, self.vmem_budget, self.tiles, self.cores,
                                              self.vpu_ratio, self.on_chip_bytes, self.on_chip_shapes,
                                              self.matmul_cost).build(g)
            hbm = sum(k.hbm_bytes for b in bodies.values() for k in b.kernels) * int(op.params.get("trip_count") or 1)
            grid: tuple[int, ...] = (int(op.params.get("trip_count") or 1),)
            axes: tuple[str, ...] = ("iteration",)
            steps = [Step("vpu", f"{op.prim} body x{grid[0]}")]
        else:
            kind = {Category.WINDOW: "window", Category.GATHER: "gather", Category.RANDOM: "random",
                    Category.COLLECTIVE: "collective", Category.TRANSFER: "transfer"}.get(cat, "movement")  # type: ignore[arg-type]
            hbm = self._hbm(ins) + self._hbm(list(op.outputs))
            hbm -= min(hbm, self._in_place_saving([op], ins, list(op.outputs)))
            grid, axes = (1,), ("i",)
            if kind in ("window", "movement"):
                # Pooling, transposes, pads, slices and concatenations stream through VMEM in
                # pipelined blocks like a fusion, but as lone unfused instructions they run on
                # one TensorCore of a megacore chip (measured v4 reduce-windows take twice the
                # two-core time); gathers and RNG stay one irregular block.
                values = ins + list(op.outputs)
                total = max((v.size for v in values), default=1)
                per_elem = max(1, math.ceil(hbm / total))
                grid = (plan_loop(total, per_elem, self.vmem_budget)[0],)
            steps = [Step("dma_in", "operands", self._hbm(ins) // grid[0]),
                     Step("vpu", op.prim, flops=int(counts.flops) // grid[0]),
                     Step("dma_out", "results", self._hbm(list(op.outputs)) // grid[0])]
        specs = [BlockSpec(v, v.shape, ("",) * len(v.shape)) for v in ins]
        specs += [BlockSpec(v, v.shape, ("",) * len(v.shape), "out") for v in op.outputs]
        counts.bytes = float(hbm)
        traffic = {} if bodies else self._traffic(ins + list(op.outputs))
        return Kernel(self._name(kind, op.scope), kind, op, ins, list(op.outputs), grid, axes, specs, steps,  # type: ignore[arg-type]
                      counts, hbm, op.where, None, bodies, megacore=megacore, traffic=traffic)


def emit_program(graph: Graph, mxu_shape: tuple[int, int], vmem_budget: int,
                 tiles: tuple[int, int, int] | None = None, cores: int = 1, vpu_ratio: float | None = None,
                 on_chip_bytes: int = 0, on_chip_shapes: frozenset[tuple[int, ...]] = frozenset(),
                 matmul_cost: MatmulCost | None = None) -> Program:
    """`vpu_ratio`: the chip's MXU FLOP/s over its VPU operations/s (see plan_mxu);
    `on_chip_bytes`: the activation buffer of a chip that keeps activations on chip (v1);
    `on_chip_shapes`: value shapes kept in VMEM (fused attention's score matrices);
    `matmul_cost`: the device model's time of a matmul kernel, (plan, HBM bytes) -> seconds,
    which picks each matmul's tiles (`DeviceTimer.matmul_seconds`)."""
    return ProgramBuilder(mxu_shape, vmem_budget, tiles, cores, vpu_ratio, on_chip_bytes, on_chip_shapes,
                          matmul_cost).build(graph)


