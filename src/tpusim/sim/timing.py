"""The TensorCore model: how long each kernel of a compiled Program takes on a TPU, and why.

Per kernel, three engines work in a double-buffered pipeline — DMA (HBM <-> VMEM), the MXUs and
the VPU — so a kernel of several grid steps costs the slowest of them plus one step's worth of
pipeline fill and drain; a kernel of one step cannot overlap them (in, compute, out):

    time = floor + (steps - 1) x grid_step + (max(mxu, vpu, dma) + fill   if steps > 1
                                              dma + max(mxu, vpu)          if steps == 1)

where fill is a matmul's first operand blocks in and last output block out (a loop kernel's:
one step's share of its DMA). The compiler's tiling pass asks this same model
(`matmul_seconds`) for the time of every candidate block shape and keeps the fastest.

- Cores: on megacore chips (v4, v5p) a kernel spreads over both TensorCores only when its grid
  has independent blocks for each (M/N blocks of a matmul, blocks of a loop kernel); a
  one-block kernel runs on one core, with that core's MXUs, VPU and share of HBM bandwidth.
- Depthwise convolutions (and their gradients) run on the VPU, not the MXU: a multiply and an
  add per MAC, channels on the lanes (fewer than 128 channels leave lanes idle).
- MXU: the kernel's folds (weight tiles of R x C, times precision passes) are spread over the
  cores' MXUs; each MXU streams its folds back to back with double-buffered weights
  (sim/mxu_timing.py, checked against the cycle-level PE model and SCALE-Sim). int8 and fp8
  operands run at their own published peaks; the sustained fraction of peak is calibrated.
- VPU: elements x ops over an 8 x 128 x ALUs-wide vector unit per core; transcendentals cost
  more (they go through a narrower unit).
- DMA: the kernel's HBM bytes (tiling re-reads included) at the calibrated sustained fraction
  of the HBM bandwidth; on a megacore chip a kernel on one TensorCore gets its own (smaller)
  calibrated fraction, not half of what both cores stream together. Traffic to buffers the
  compiler placed in v4's CMEM (compiler/cmem.py) runs at CMEM's bandwidth, beside HBM's.
- Reductions over the minor (lane) dim and windows along it also pay the reduce/permute unit.
- floor: the fixed device time of any kernel (launch, scalar setup, first DMA round trip).
The per-generation constants (floor, HBM efficiency for both and for one TensorCore, MXU
efficiency and first-fold fill share, f16 conversion cost, ICI efficiency) live in sim/calibration.yaml
with the measured rows each was fitted on (`tpusim validate`).
Loops cost their body times the trip count; identical grid steps and iterations are costed
once and multiplied, so large programs estimate in milliseconds.
GPUs (sim/gpu_timing.py) and the host CPU (sim/cpu_timing.py) have device models of their own
behind the same DeviceTimer interface (sim/device_timer.py).
"""

from __future__ import annotations

import math
from typing import Any

from tpusim.hardware.chip import Chip
from tpusim.ir.opset import Category
from tpusim.ir.primitives import category_of
from tpusim.program.program import HbmPressure, Kernel, MxuPlan
from tpusim.sim.calibration import Calibration
from tpusim.sim.device_timer import (DEFAULT_CONSTANTS, Bound, DeviceTimer, KernelTime,  # noqa: F401 (re-exported)
                                     TimingConstants)
from tpusim.sim.mxu_timing import folds, ws_cycles_for_folds


class TensorCoreTimer(DeviceTimer):
    """Turns Program kernels into KernelTimes for one device of a TPU `chip`."""

    def __init__(self, chip: Chip, constants: TimingConstants = DEFAULT_CONSTANTS, mesh: Any = None,
                 calibration: Calibration | None = None) -> None:
        super().__init__(chip, constants, mesh, calibration)
        self.cores = chip.cores_per_device
        self.mxus_per_core = int(chip.mxus_per_core.value) if chip.mxus_per_core else 1
        self.mxus = self.mxus_per_core * self.cores
        self.rows, self.cols = chip.mxu_shape
        clock = chip.clock_mhz.value * 1e6 if chip.clock_mhz else 1e9
        if self.peak_flops:
            # Never let rounding in the sources (v3: 0.94 GHz x 4 x 128^2 x 2 = 123.2 > 123 TFLOPS)
            # put the array above the published peak.
            clock = min(clock, self.peak_flops / (2 * self.rows * self.cols * self.mxus))
        self.clock_hz = clock
        sub = chip.vpu_sublanes.value if chip.vpu_sublanes else 8
        lanes = chip.vpu_lanes.value if chip.vpu_lanes else 128
        alus = chip.vpu_alus_per_lane.value if chip.vpu_alus_per_lane else constants.default_vpu_alus
        self.vpu_elems_per_s = sub * lanes * alus * self.cores * self.clock_hz

    # ---- engines -------------------------------------------------------------------------
    def vpu_seconds(self, flops: float, transcendentals: float, cores: int | None = None) -> float:
        share = (cores or self.cores) / self.cores
        return (flops + self.k.transcendental_cost * transcendentals) / (self.vpu_elems_per_s * share)

    def dma_seconds(self, nbytes: float, cores: int | None = None) -> float:
        """HBM time at the sustained bandwidth of `cores` TensorCores (all of the device's by default)."""
        cores = cores or self.cores
        fraction = self.cal.hbm_efficiency
        if cores < self.cores:
            fraction = cores * (self.cal.one_core_hbm_fraction or self.cal.hbm_efficiency / self.cores)
        return nbytes / (self.bw * fraction) if nbytes else 0.0

    def cmem_seconds(self, kernel: Kernel, cores: int) -> float:
        """Time of the kernel's traffic to buffers in CMEM (v4): its own read and write paths,
        concurrent with HBM; each TensorCore has its share, streamed at the same sustained
        fraction as HBM (an assumption: CMEM has no public measurement)."""
        if not (kernel.cmem_read_bytes or kernel.cmem_write_bytes) or self.chip.cmem_read_gbps is None:
            return 0.0
        share = cores / self.cores * self.cal.hbm_efficiency
        write_bw = self.chip.cmem_write_gbps or self.chip.cmem_read_gbps
        return (kernel.cmem_read_bytes / (self.chip.cmem_read_gbps.value * 1e9)
                + kernel.cmem_write_bytes / (write_bw.value * 1e9)) / share

    def mxu_rate(self, plan: MxuPlan) -> tuple[float, str]:
        """(speed relative to the bf16 peak, label) for the kernel's operand type."""
        if plan.operand_type == "f16" and self.cal.f16_convert_cycles:
            return 1.0, "bf16 peak (f16 converted on the VPU)"
        if plan.operand_type in ("int8", "fp8"):
            return self.chip.matmul_rate(plan.operand_type)
        return 1.0, f"{self.chip.mxu_dtype} peak"

    def mxu_seconds(self, plan: MxuPlan, cores: int | None = None) -> float:
        """Fold schedule on the cores' MXUs. A faster operand type (int8/fp8 at 2x) scales the
        folds streamed; the sustained fraction of peak (calibrated) scales the whole. (f16 on a
        bf16-only array pays its conversion apart: `f16_convert_seconds`.)"""
        p = plan
        mxus = self.mxus_per_core * (cores or self.cores)
        m_blocks = p.grid[0]
        # A last partial block along K or N is masked, not padded to a whole block: the array
        # runs the padded problem's folds, once per M block (each M block re-streams them).
        rate, _ = self.mxu_rate(p)
        total_folds = p.batch * p.taps * m_blocks * folds(p.Kp, p.Np, self.rows, self.cols) * p.passes / rate
        per_mxu = max(1, math.ceil(total_folds / mxus))
        rows_streamed = max(1, math.ceil(p.Mp / m_blocks))
        cycles = ws_cycles_for_folds(per_mxu, rows_streamed, self.rows, self.cols)
        fill = min(cycles, 2 * self.rows + self.cols - 2)  # the first fold's load, skew and drain
        return ((cycles - fill) / self.cal.mxu_efficiency + fill * self.cal.mxu_fill_share) / self.clock_hz

    def f16_convert_seconds(self, plan: MxuPlan, cores: int) -> float:
        """float16 operands on an MXU that multiplies bf16 only: the VPU converts every operand
        block each time it is fed (the lhs once per N block, the rhs once per M block), split
        over the cores, and the MXU waits for it. Mechanism read off the v4 GEMM times (the
        cost per vreg fitted: calibration.yaml); the feed counts follow the kernel's tiles."""
        if plan.operand_type != "f16" or not self.cal.f16_convert_cycles:
            return 0.0
        m_blocks, n_blocks, _ = plan.grid
        fed = plan.batch * plan.taps * plan.Kp * (plan.Mp * n_blocks + plan.Np * m_blocks)
        return fed / (8 * 128) / cores * self.cal.f16_convert_cycles / self.clock_hz

    def xlu_seconds(self, kernel: Kernel, cores: int) -> float:
        """Cross-lane work of a windowed op whose window or stride spans the minor (lane) dim
        (NCHW pooling over W): taps sit in neighbouring lanes, so each input vreg needs lane
        rotations, one per extra tap, plus a compaction per stride step, on the transpose/permute
        unit at one instruction per 8 cycles (XProf's unit rates). A modelling assumption, not
        fitted."""
        window = kernel.op.params.get("window_dimensions")
        strides = kernel.op.params.get("window_strides") or (1,) * len(window or ())
        if not window or (window[-1] <= 1 and strides[-1] <= 1):
            return 0.0
        vregs = math.ceil(max(v.size for v in kernel.inputs) / (8 * 128))
        instructions = vregs * (window[-1] - 1 + strides[-1])
        return instructions * 8 / (self.clock_hz * cores)

    def lane_reduce_seconds(self, kernel: Kernel, cores: int) -> float:
        """Cross-lane work of reductions over the minor (lane) dim (a norm's mean and variance
        over the features): each (8,128) vreg of the reduced input needs one lane-reduce on the
        reduce/permute unit, at one instruction per 8 cycles (XProf's unit rates). Reductions
        over major dims are plain VPU adds across vregs. A modelling assumption, not fitted."""
        fused = kernel.op.subgraphs.get("fused") if kernel.op is not None else None
        instructions = 0
        for op in (fused.ops if fused is not None else ()):
            if category_of(op.prim) is Category.REDUCE and op.inputs[0].shape:
                if len(op.inputs[0].shape) - 1 in tuple(op.params.get("axes") or ()):
                    instructions += math.ceil(op.inputs[0].size / (8 * 128))
        return instructions * 8 / (self.clock_hz * cores)

    def cores_used(self, kernel: Kernel) -> int:
        """Megacore: a kernel occupies both TensorCores only if the compiler partitions it and its
        grid has a block for each."""
        if kernel.mxu is not None:
            return self._mxu_cores(kernel.mxu, kernel.megacore)
        if self.cores == 1 or not kernel.megacore:
            return 1
        return max(1, min(self.cores, math.prod(kernel.grid)))

    def _mxu_cores(self, plan: MxuPlan, megacore: bool = True) -> int:
        if self.cores == 1 or not megacore:
            return 1
        m_blocks, n_blocks, _ = plan.grid
        return max(1, min(self.cores, plan.batch * m_blocks * n_blocks))

    @staticmethod
    def steps_per_core(kernel: Kernel, cores: int) -> int:
        """Grid steps one TensorCore runs: megacore hands each core its own share of the
        parallel blocks (M/N blocks of a matmul, blocks of a loop kernel), and each core
        pipelines only its share."""
        if kernel.mxu is not None:
            return TensorCoreTimer._mxu_steps(kernel.mxu, cores)
        steps = max(1, math.prod(kernel.grid))
        return steps if cores == 1 else math.ceil(steps / cores)

    @staticmethod
    def _mxu_steps(plan: MxuPlan, cores: int) -> int:
        m_blocks, n_blocks, k_steps = plan.grid
        return max(1, math.ceil(m_blocks * n_blocks / cores) * k_steps)

    # ---- kernels -------------------------------------------------------------------------
    def hbm_pressure(self, kernel: Kernel) -> HbmPressure:
        """How memory-bound the kernel is, and how much HBM time it leaves idle: what a
        memory-space pass weighs when it moves traffic on chip (compiler/cmem.py)."""
        if kernel.bodies or kernel.kind in ("collective", "transfer"):
            return HbmPressure(0.0, 0.0, 0.0)
        t = self.time_compute_kernel(kernel)
        per_byte = t.dma_s / kernel.hbm_bytes if kernel.hbm_bytes else 0.0
        idle = max(0.0, t.time_s - t.dma_s) * self.bw * self.cal.hbm_efficiency
        return HbmPressure(max(0.0, t.dma_s - max(t.mxu_s, t.vpu_s)), per_byte, idle)

    @property
    def matrix_units(self) -> int:
        return self.mxus

    def _pipelined(self, mxu_s: float, vpu_s: float, dma_s: float, steps: int, streaming: bool,
                   fill_s: float | None = None) -> tuple[float, float]:
        """(overhead, steady) of a kernel whose engines take these times over `steps` grid steps
        per core: double-buffered, the slowest engine sets the pace and the pipe fills and
        drains (`fill_s`: a matmul's first operand blocks in and last output block out; by
        default one step's share of the DMA); in one step, in -> compute -> out run one after
        the other. A streaming kernel (a loop fusion, a depthwise conv) issues the next block's
        DMA while one is in flight, so its per-step cost hides behind the stream."""
        steady = max(mxu_s, vpu_s, dma_s)
        if steps > 1:
            fill = min(dma_s, dma_s / steps if fill_s is None else fill_s)
        else:
            fill = dma_s + max(mxu_s, vpu_s) - steady
        step_s = (steps - 1) * self.k.grid_step_s  # step 1 is in the floor
        if streaming:
            step_s = max(0.0, step_s - steady)
        return self.cal.kernel_floor_s + fill + step_s, steady

    def _fill_seconds(self, plan: MxuPlan, cores: int) -> float:
        """A matmul pipeline's fill and drain: each core's first operand blocks in and its last
        output block out, at that core's DMA rate."""
        return self.dma_seconds(plan.first_step_bytes * cores, cores)

    def matmul_seconds(self, plan: MxuPlan, hbm_bytes: float, megacore: bool = True) -> float:
        """Device time of an MXU kernel cut as `plan` that moves `hbm_bytes` (its epilogue's
        vector work aside): what the tiling pass asks of each candidate block shape, so the
        tiles it picks are those this model says run fastest, as XLA's tiler asks its own cost
        model."""
        cores = self._mxu_cores(plan, megacore)
        mxu_s = self.mxu_seconds(plan, cores) + self.f16_convert_seconds(plan, cores)
        overhead, steady = self._pipelined(mxu_s, 0.0, self.dma_seconds(hbm_bytes, cores),
                                           self._mxu_steps(plan, cores), False, self._fill_seconds(plan, cores))
        return overhead + steady

    def time_compute_kernel(self, kernel: Kernel) -> KernelTime:
        c = kernel.counts
        cores = self.cores_used(kernel)
        on_mxu = kernel.mxu is not None and kernel.mxu.engine == "mxu"
        mxu_s = 0.0
        if on_mxu:
            p = kernel.mxu
            mxu_s = self.mxu_seconds(p, cores) + self.f16_convert_seconds(p, cores)  # type: ignore[arg-type]
        mxu_flops = float(kernel.mxu.useful_flops) if on_mxu else 0.0  # type: ignore[union-attr]
        rate = self.mxu_rate(kernel.mxu)[1] if on_mxu else ""  # type: ignore[arg-type]
        vpu_flops = c.flops - mxu_flops
        if kernel.mxu is not None and not on_mxu:  # a depthwise conv: multiply-adds on the VPU
            p = kernel.mxu
            vpu_flops += p.useful_flops * (p.lanes / max(1, p.batch * p.N) - 1)  # idle lanes
        if kernel.kind == "window":
            vpu_flops = c.flops + sum(v.size for v in kernel.outputs)
        vpu_s = self.vpu_seconds(max(vpu_flops, 0.0), c.transcendentals, cores)
        if kernel.kind == "window":
            vpu_s += self.xlu_seconds(kernel, cores)
        elif kernel.kind == "loop":
            vpu_s += self.lane_reduce_seconds(kernel, cores)
        dma_s = max(self.dma_seconds(kernel.hbm_bytes, cores), self.cmem_seconds(kernel, cores))
        streaming = kernel.kind == "loop" or (not on_mxu and kernel.mxu is not None)
        fill_s = self._fill_seconds(kernel.mxu, cores) if on_mxu else None  # type: ignore[arg-type]
        overhead, steady = self._pipelined(mxu_s, vpu_s, dma_s, self.steps_per_core(kernel, cores), streaming, fill_s)
        total = overhead + steady
        if overhead > steady:
            bound: Bound = "overhead"
        elif steady == mxu_s:
            bound = "compute"
        elif steady == dma_s:
            bound = "memory"
        else:
            bound = "vector"
        return KernelTime(kernel.name, kernel.kind, total, c.flops, float(kernel.hbm_bytes + kernel.async_copy_bytes), bound,
                          mxu_s, vpu_s, dma_s, overhead, mxu_flops=mxu_flops, where=kernel.where, rate=rate, cores=cores)
