"""Tiling pass: cut matmuls and convolutions into MXU-sized blocks that fit VMEM.

The MXU is an R x C weight-stationary array: K (the contracted dim) maps to its rows and N to
its columns, so both are padded up to whole arrays; M streams through and pads only to the
sublane tile of the (8,128) layout. Among block sizes (tm, tk, tn) whose double-buffered
operands and f32 accumulator fit the VMEM budget, the plan the device model times fastest wins:
it weighs the HBM re-reads of small blocks against the MXU's per-block weight loads and the
grid's per-step cost, and on megacore chips whether every TensorCore gets a block (M or N
blocks), as XLA's megacore partitioning does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from tpusim.compiler.layout import padded_bytes, round_up, sublane_tile
from tpusim.compiler.precision import PASSES
from tpusim.ir.geometry import conv_geometry, dot_geometry, ragged_geometry
from tpusim.ir.graph import Op, Value
from tpusim.program.program import MxuPlan

# Fraction of a core's VMEM the compiler lets one kernel's blocks use; the rest is left for
# semaphores, spills and internal scratch. A modelling choice, not calibrated.
DEFAULT_VMEM_FRACTION = 0.75


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _candidates(base: int, full: int, cap: int = 8192) -> list[int]:
    out, t = [], base
    while t < full and t <= cap:
        out.append(t)
        t *= 2
    out.append(full)
    return sorted(set(out))


def mxu_block_vmem(tm: int, tk: int, tn: int, in_itemsize: int, out_itemsize: int) -> int:
    """VMEM for one step: double-buffered input blocks (as DMA'd: an f32 operand converted to
    bf16 inside the kernel arrives as f32), the f32 accumulator and the output block, written
    once after the last k step (XLA's scoped VMEM for an f32 8192^3 dot on v4 is this sum)."""
    return 2 * (tm * tk + tk * tn) * in_itemsize + tm * tn * 4 + tm * tn * out_itemsize


def operand_type(op: Op) -> str:
    """The MXU input type of a matmul/conv, which sets its rate: the narrower operand decides
    (an int8 weight against bf16 activations runs at the bf16 rate: the int8 is widened)."""
    dts = [np.dtype(v.dtype) for v in op.inputs[:2]]
    if all(d.kind in "iu" and d.itemsize == 1 for d in dts):
        return "int8"
    if all(d.kind in "iub" for d in dts):
        return "int"
    if all(d.itemsize == 1 for d in dts):
        return "fp8"
    if any(d == np.dtype("float16") for d in dts) and all(d.itemsize <= 2 for d in dts):
        return "f16"
    return "bf16" if all(d.itemsize <= 2 for d in dts) else "f32"


def _mxu_dims(op: Op) -> tuple[int, int, int, int, int]:
    """(batch, M, K, N, taps) of a matmul or convolution: a grouped convolution is one matmul
    per feature group (or per batch group, as a depthwise filter gradient is); a dilated input's
    all-zero rows are not streamed (`dilated_row_fraction`)."""
    if op.prim == "dot_general":
        g = dot_geometry(op)
        return g.B, g.M, g.K, g.N, 1
    if op.prim == "ragged_dot_general":
        r = ragged_geometry(op)
        return 1, r.M, r.K, r.N, 1
    c = conv_geometry(op)
    groups = c.groups * c.batch_groups
    rows = c.macs // (c.in_per_group * c.out_features * c.taps)  # output positions streamed
    return groups, rows, c.in_per_group, c.out_features // groups, c.taps


def is_depthwise(op: Op) -> bool:
    """A grouped convolution whose groups each contract or produce a single channel (depthwise
    convs, their input gradients, and their filter gradients, which JAX emits with
    batch_group_count): on the MXU a group would fill one row or column of a weight tile, so
    XLA:TPU runs it on the VPU as multiply-adds over the taps with channels on the lanes."""
    if op.prim != "conv_general_dilated":
        return False
    batch, _, K, N, _ = _mxu_dims(op)
    return batch > 1 and min(K, N) == 1


# Blocks per TensorCore a depthwise conv is streamed in at least (where it has rows enough): a
# modelling choice, like the MXU planner's smaller blocks, not calibrated.
DEPTHWISE_BLOCKS_PER_CORE = 4


def _plan_depthwise(op: Op, plan: MxuPlan, vmem_budget: int, sources: tuple[Value, Value], cores: int) -> MxuPlan:
    """Every channel on the lanes, the filter resident, and the operands streamed in blocks like
    a loop fusion's: blocks of output rows (a forward or input-gradient conv), or of the
    positions a filter gradient contracts over (its output is only the small filter). Input,
    filter and output each cross HBM once. For this engine `tk` is taps (positions) per step."""
    plan.engine = "vpu"
    # The streamed array's tiled layout decides how full the vregs are (the layout pass puts W
    # on the lanes when there are fewer channels than lanes): `lanes` is the channel count
    # scaled by the padding that layout carries.
    big = max((*sources, op.outputs[0]), key=lambda v: v.size)
    fill = big.size * big.dtype.itemsize / max(1, padded_bytes(big.shape, big.dtype))
    plan.lanes = max(1, round(plan.batch * plan.N / max(fill, 1e-9)))
    sub = plan.tm  # the sublane tile, as plan_mxu starts it
    lhs_b, rhs_b, out_b = _operand_hbm_bytes(op, sources)
    budget = min(vmem_budget // 2, MAX_LOOP_BLOCK_BYTES)
    row_bytes = (lhs_b + out_b) // max(1, plan.M)  # one output row's share of input and output
    rows = max(sub, (budget // max(1, row_bytes)) // sub * sub)
    # One block per TensorCore when everything fits one block; otherwise at least
    # DEPTHWISE_BLOCKS_PER_CORE per core, so the pipeline's fill is a fraction of one core's stream.
    per_core = 1 if lhs_b + out_b <= budget else DEPTHWISE_BLOCKS_PER_CORE
    rows = min(rows, max(sub, round_up(_cdiv(plan.Mp, per_core * max(1, cores)), sub)))
    plan.tm, plan.tn = min(rows, plan.Mp), plan.N
    m_blocks = _cdiv(plan.Mp, plan.tm)
    steps = max(1, math.ceil((lhs_b + rhs_b + out_b) / budget / m_blocks))
    plan.tk = _cdiv(plan.taps, min(steps, plan.taps))
    plan.vmem_bytes = 2 * budget
    return plan


def _pack_groups(batch: int, K: int, N: int, rows: int, cols: int) -> tuple[int, int, int, int]:
    """(matmuls, K, N, groups per weight tile) of a grouped convolution with several channels
    per group: as many groups as fit share one weight tile block-diagonally (their K and N side
    by side), so a group of 32 channels does not pad to a whole 128 x 128 array."""
    if batch <= 1 or (K >= rows and N >= cols):
        return batch, K, N, 1
    per_tile = max(1, min(batch, rows // max(1, K), cols // max(1, N)))
    return -(-batch // per_tile), K * per_tile, N * per_tile, per_tile


def plan_mxu(op: Op, mxu_shape: tuple[int, int], vmem_budget: int,
             tiles: tuple[int, int, int] | None = None, cores: int = 1,
             sources: tuple[Value, Value] | None = None, vpu_ratio: float | None = None,
             on_vpu: bool = True, cost: Callable[[MxuPlan], float] | None = None) -> MxuPlan:
    """Block sizes for one matmul/conv op (its precision must already be assigned).
    `tiles=(tm, tk, tn)` forces the block shape, like a hand-written Pallas kernel's BlockSpecs
    (clipped to the padded problem). `sources` are the HBM arrays the operands are made from
    when a prologue (a convert, a softmax's normalization) is fused in; by default the operands.
    `vpu_ratio` (the chip's MXU FLOP/s over its VPU operations/s) lets a depthwise conv take the
    MXU, its groups packed block-diagonally, where that issues less work than the VPU would
    (few channels and many taps); without it depthwise convs always run on the VPU.
    `cost` is the device model's time of the kernel a candidate plan makes (its MXU work, DMA
    traffic and grid steps: `DeviceTimer.matmul_seconds`): the fastest plan wins, as XLA's tiler
    asks its cost model. Without one, the plan with the least HBM traffic wins (ties: a block per
    TensorCore first, then fewer grid steps)."""
    precision = op.params.get("mxu_precision", "bf16")
    passes = PASSES[precision]
    rows, cols = mxu_shape
    in_dtype = np.dtype(op.inputs[0].dtype)
    in_itemsize = 1 if precision == "int8" else (2 if precision == "bf16" else in_dtype.itemsize)
    sources = sources or (op.inputs[0], op.inputs[1])
    dma_itemsize = max(in_itemsize, *(np.dtype(v.dtype).itemsize for v in sources))
    out_itemsize = np.dtype(op.outputs[0].dtype).itemsize
    batch, M, K, N, taps = _mxu_dims(op)
    sub = sublane_tile(np.dtype("bfloat16") if in_itemsize == 2 else in_dtype)
    per_tile = 1
    if is_depthwise(op) and tiles is None and on_vpu:
        plan = MxuPlan(precision, passes, batch, M, K, N, taps, round_up(max(M, 1), sub), K, N, sub, K, N, 0,
                       in_itemsize, out_itemsize, operand_type(op))
        plan = _plan_depthwise(op, plan, vmem_budget, sources, cores)
        if vpu_ratio is None:
            return plan
        packed = plan_mxu(op, mxu_shape, vmem_budget, None, cores, sources, None, on_vpu=False, cost=cost)
        vpu_ops = plan.useful_flops * plan.lanes / max(1, plan.batch * plan.N)
        return plan if vpu_ops <= packed.issued_flops / vpu_ratio else packed
    if op.prim == "conv_general_dilated":
        batch, K, N, per_tile = _pack_groups(batch, K, N, rows, cols)
    if taps > 1 and round_up(K * taps, rows) <= taps * round_up(K, rows):
        # The filter taps are folded into the contraction (im2col in VMEM, XLA's space-to-depth
        # for small feature counts) when that pads no more: ResNet's 7x7x3 stem contracts over
        # 147 -> 256, not 49 x 128, and a weight gradient (whose "taps" are every output pixel)
        # walks K in blocks as deep as VMEM allows instead of one 128-row block per pixel.
        K, taps = K * taps, 1
    Mp, Kp, Np = round_up(max(M, 1), sub), round_up(max(K, 1), rows), round_up(max(N, 1), cols)
    plan = MxuPlan(precision, passes, batch, M, K, N, taps, Mp, Kp, Np, sub, rows, cols, 0, in_itemsize, out_itemsize,
                   operand_type(op), groups_per_tile=per_tile, dma_itemsize=dma_itemsize)
    lhs_hbm, rhs_hbm, out_hbm = _operand_hbm_bytes(op, sources)
    if tiles is not None:
        tm, tk, tn = (max(1, int(t)) for t in tiles)
        plan.tm, plan.tk, plan.tn = min(round_up(tm, sub), Mp), min(round_up(tk, rows), Kp), min(round_up(tn, cols), Np)
        plan.vmem_bytes = mxu_block_vmem(plan.tm, plan.tk, plan.tn, dma_itemsize, out_itemsize)
        return plan
    best = None
    for tm in _candidates(sub, Mp):
        for tk in _candidates(rows, Kp):
            for tn in _candidates(cols, Np):
                need = mxu_block_vmem(tm, tk, tn, dma_itemsize, out_itemsize)
                if need > vmem_budget and (tm, tk, tn) != (sub, rows, cols):
                    continue
                steps = _cdiv(Mp, tm) * _cdiv(Np, tn) * _cdiv(Kp, tk)
                if cost is not None:
                    key: tuple[float, ...] = (cost(dataclasses.replace(plan, tm=tm, tk=tk, tn=tn, vmem_bytes=need)), steps, -tm)
                else:
                    traffic = lhs_hbm * _cdiv(Np, tn) + rhs_hbm * _cdiv(Mp, tm) + out_hbm
                    parallel = batch * _cdiv(Mp, tm) * _cdiv(Np, tn)
                    key = (-min(parallel, cores), traffic, steps, -tm)
                if best is None or key < best[0]:
                    best = (key, tm, tk, tn, need)
    assert best is not None
    _, plan.tm, plan.tk, plan.tn, plan.vmem_bytes = best
    return plan


def _operand_hbm_bytes(op: Op, sources: tuple[Value, Value]) -> tuple[int, int, int]:
    """Bytes of lhs, rhs (as their sources are stored) and result in HBM: their own dtypes and
    tiled layouts (padding to the MXU size happens in VMEM and costs no HBM traffic)."""
    (lhs, rhs), out = sources, op.outputs[0]
    return padded_bytes(lhs.shape, lhs.dtype), padded_bytes(rhs.shape, rhs.dtype), padded_bytes(out.shape, out.dtype)


def mxu_hbm_traffic(op: Op, plan: MxuPlan, sources: tuple[Value, Value] | None = None) -> tuple[int, int, int]:
    """(lhs, rhs, out) bytes moved between HBM and VMEM for the whole kernel: lhs is re-read
    for every block column, rhs for every block row."""
    m_blocks, n_blocks, _ = plan.grid
    lhs_b, rhs_b, out_b = _operand_hbm_bytes(op, sources or (op.inputs[0], op.inputs[1]))
    if op.prim == "ragged_dot_general" and ragged_geometry(op).rhs_grouped:
        # a block of rows needs only its groups' matrices: each is read about once per block of
        # its own rows
        groups = ragged_geometry(op).groups
        return lhs_b * n_blocks, int(rhs_b * max(1.0, m_blocks / max(1, groups))), out_b
    return lhs_b * n_blocks, rhs_b * m_blocks, out_b


# Largest block (all operands of one grid step) of a loop kernel: past a few MiB a bigger block
# only lengthens the pipeline's fill and drain. A modelling choice, not calibrated.
MAX_LOOP_BLOCK_BYTES = 2 * 2**20


def plan_loop(total_elems: int, bytes_per_elem: int, vmem_budget: int, parallel: int = 1) -> tuple[int, int]:
    """(grid steps, elements per block) for a fused elementwise/reduction kernel: blocks are
    whole (8,128) tiles, double-buffered, sized to the VMEM budget and MAX_LOOP_BLOCK_BYTES,
    and at least `parallel` of them (one per megacore TensorCore) when there are enough tiles."""
    tile = 8 * 128
    budget = min(vmem_budget // 2, MAX_LOOP_BLOCK_BYTES)
    per_block = max(tile, (budget // max(1, bytes_per_elem)) // tile * tile)
    tiles = math.ceil(max(total_elems, 1) / tile)
    per_block = min(per_block, math.ceil(tiles / max(1, min(parallel, tiles))) * tile)
    return max(1, math.ceil(total_elems / per_block)), per_block
