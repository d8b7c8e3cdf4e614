"""What every device model shares: the per-kernel result, the constants no chip file states,
and the walk over a Program (loops, branches, collectives and how they overlap compute).

A device model (TensorCore, GPU, CPU) subclasses `DeviceTimer` and prices one compute kernel in
`time_compute_kernel`; everything else — control flow, collectives over the mesh, latency
hiding, start times — is the same for every kind of device, so the walk never branches on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from tpusim.compiler.fusion import XLA_TPU, FusionRules
from tpusim.errors import TpusimError
from tpusim.hardware.chip import Chip
from tpusim.program.program import AttentionRegion, Kernel, MxuPlan, Program
from tpusim.sim.calibration import Calibration, calibration_of

Bound = Literal["compute", "memory", "vector", "overhead", "communication"]


@dataclass(frozen=True)
class TimingConstants:
    """Constants that no chip file states. Each is a modelling assumption, not fitted to any
    measurement; `tpusim validate` shows how the whole model fares against public numbers."""

    # Per grid step of a pipelined kernel (DMA issue, semaphore waits, loop bookkeeping), serial
    # with the step's work (a streaming loop kernel hides it behind its DMA). CALIBRATED: fitted by `tpusim validate --refit` on the Pallas
    # 128x128x128-block matmuls (4096^3, 8192^3) of the JAX Pallas matmul guide on TPU v5e.
    grid_step_s: float = 2.607e-7
    # One jitted call timed from Python (host dispatch + sync); added only when comparing with
    # measurements taken that way, never to device time. CALIBRATED: fitted on the XLA bf16
    # 1024^3 matmul of the same guide (v5e).
    host_dispatch_s: float = 1.013e-4
    # Fixed cost of one collective beyond its hops and bytes (synchronization, DMA setup).
    # CALIBRATED: fitted on the small-payload (1-16 KiB) lax.ppermute timings on v5p-8 in
    # marin-community/marin issue #6736; the larger payloads there are held out.
    collective_fixed_s: float = 3.9e-6
    loop_iteration_s: float = 0.2e-6  # loop bookkeeping per scan/while iteration
    transcendental_cost: float = 4.0  # VPU slots per element for exp/tanh/... vs 1 for add
    default_vpu_alus: int = 2  # ALUs per (sublane, lane) where the chip file is silent (v4's value)


DEFAULT_CONSTANTS = TimingConstants()


@dataclass
class KernelTime:
    name: str
    kind: str
    time_s: float
    flops: float
    bytes: float
    bound: Bound
    mxu_s: float = 0.0
    vpu_s: float = 0.0
    dma_s: float = 0.0
    overhead_s: float = 0.0
    start_s: float = 0.0
    mxu_flops: float = 0.0  # useful MXU FLOPs (for utilization)
    rate: str = ""  # which published peak the MXU work ran at (bf16, int8, fp8, f16 measured)
    cores: int = 1  # TensorCores the kernel ran on
    comm_s: float = 0.0  # time in collectives, nested loops included
    hidden_s: float = 0.0  # collective time overlapped with independent compute (not in time_s)
    where: str = ""
    children: list["KernelTime"] = field(default_factory=list)


class DeviceTimer:
    """Turns Program kernels into KernelTimes for one device of `chip`. Subclasses price compute
    kernels (`time_compute_kernel`) and HBM streams (`dma_seconds`)."""

    # Words the reports use for this kind of device's matrix unit and vector unit.
    matrix_unit = "MXU"
    vector_unit = "VPU"
    # What one kernel may hold on this device (its compiler's fusion rules): the fusion pass
    # asks, so the kernels it forms are the ones this model then times.
    fusion_rules: FusionRules = XLA_TPU

    def __init__(self, chip: Chip, constants: TimingConstants = DEFAULT_CONSTANTS, mesh: Any = None,
                 calibration: Calibration | None = None) -> None:
        self.chip = chip
        self.k = constants
        self.cal = calibration or calibration_of(chip)
        self.mesh = mesh
        self.peak_flops = chip.device_peak_flops
        self.bw = chip.device_hbm_bandwidth

    @property
    def matrix_units(self) -> int:
        """Matrix units the trace draws a track for."""
        return 1

    def dma_seconds(self, nbytes: float, cores: int | None = None) -> float:
        return nbytes / (self.bw * self.cal.hbm_efficiency) if nbytes else 0.0

    def time_compute_kernel(self, kernel: Kernel) -> "KernelTime":
        raise NotImplementedError

    def matmul_seconds(self, plan: MxuPlan, hbm_bytes: float, megacore: bool = True) -> float:
        """Device time of a matmul/conv kernel cut as `plan`, moving `hbm_bytes`: the compiler's
        tiling pass asks this of every candidate block shape (the same model that times the
        program decides its tiles)."""
        raise NotImplementedError

    def time_kernel(self, kernel: Kernel) -> "KernelTime":
        if kernel.bodies:
            return self._control(kernel)
        if kernel.kind == "collective":
            return self._collective(kernel)
        if kernel.kind == "transfer":
            return self._host_transfer(kernel)
        return self.time_compute_kernel(kernel)

    def _host_transfer(self, kernel: Kernel) -> KernelTime:
        """A copy between HBM and host memory over the chip's host link (PCIe). It is a DMA, so
        XLA runs it asynchronously: like a collective it hides behind independent compute."""
        link = self.chip.host_link_bw_gbps
        if link is None:
            raise TpusimError(f"{self.chip.name} has no host link bandwidth (host_link_bw_gbps) in its chip file, "
                              f"so offloading to host memory at {kernel.where} cannot be timed: add it (sourced)")
        nbytes = float(kernel.outputs[0].nbytes)
        t = nbytes / (link.value * 1e9) + self.cal.kernel_floor_s
        return KernelTime(kernel.name, kernel.kind, t, 0.0, 0.0, "communication", comm_s=t, where=kernel.where)

    def _collective(self, kernel: Kernel) -> KernelTime:
        from tpusim.distribute.collectives import collective_cost

        op = kernel.op
        src, dst = op.inputs[0], op.outputs[0]
        if op.prim == "shard_slice" or self.mesh is None:  # a local copy of this device's block
            t = self.dma_seconds(2 * dst.nbytes) + self.cal.kernel_floor_s
            return KernelTime(kernel.name, kernel.kind, t, 0.0, float(2 * dst.nbytes), "memory", dma_s=t, where=kernel.where)
        nbytes = dst.nbytes if op.prim == "all_gather" else src.nbytes
        cost = collective_cost(op.prim, float(nbytes), tuple(op.params["axes"]), self.mesh,  # type: ignore[arg-type]
                               self.cal.ici_efficiency)
        t = cost.time_s + self.k.collective_fixed_s
        return KernelTime(kernel.name, kernel.kind, t, float(kernel.counts.flops), float(nbytes), "communication",
                          overhead_s=self.k.collective_fixed_s, comm_s=t, where=kernel.where)

    def _control(self, kernel: Kernel) -> KernelTime:
        op = kernel.op
        if op.prim == "cond":
            branches = [self.time_program(b) for b in kernel.bodies.values()]
            worst = max(branches, key=lambda ks: sum(k.time_s for k in ks))
            children, trips = worst, 1
        else:
            children = self.time_program(kernel.bodies["body"])
            if "cond" in kernel.bodies:
                children = children + self.time_program(kernel.bodies["cond"])
            trips = int(op.params.get("trip_count") or 1)
        body_s = sum(k.time_s for k in children)
        total = trips * (body_s + self.k.loop_iteration_s)
        agg = {f: trips * sum(getattr(k, f) for k in children)
               for f in ("flops", "bytes", "mxu_s", "vpu_s", "dma_s", "overhead_s", "mxu_flops", "comm_s", "hidden_s")}
        engines = {"compute": agg["mxu_s"], "vector": agg["vpu_s"], "memory": agg["dma_s"], "communication": agg["comm_s"],
                   "overhead": agg["overhead_s"] + trips * self.k.loop_iteration_s}
        bound: Bound = max(engines, key=engines.get)  # type: ignore[arg-type]
        return KernelTime(kernel.name, kernel.kind, total, agg["flops"], agg["bytes"], bound, agg["mxu_s"], agg["vpu_s"],
                          agg["dma_s"], agg["overhead_s"] + trips * self.k.loop_iteration_s, mxu_flops=agg["mxu_flops"],
                          comm_s=agg["comm_s"], hidden_s=agg["hidden_s"], where=kernel.where, children=children)

    def time_attention(self, region: AttentionRegion, kernels: list[Kernel], parts: list[KernelTime]) -> KernelTime | None:
        """One fused attention kernel timed from its `kernels` and their `parts` (each timed
        alone), or None to keep the parts as they are (the default: each part's own time, the
        scores' HBM traffic already gone)."""
        return None

    def time_program(self, program: Program) -> list[KernelTime]:
        out = [self.time_kernel(kernel) for kernel in program.kernels]
        for region in program.attention:
            parts = [out[i] for i in region.kernels]
            fused = self.time_attention(region, [program.kernels[i] for i in region.kernels], parts)
            if fused is not None:
                # The first part's row carries the fused kernel; the others ran inside it.
                out[region.kernels[0]] = fused
                for i in region.kernels[1:]:
                    out[i] = replace(out[i], time_s=0.0, flops=0.0, bytes=0.0, mxu_s=0.0, vpu_s=0.0, dma_s=0.0,
                                     overhead_s=0.0, mxu_flops=0.0)
        self._overlap_collectives(program, out)
        t = 0.0
        for kt in out:
            kt.start_s = t
            t += kt.time_s
        return out

    @staticmethod
    def _overlap_collectives(program: Program, times: list[KernelTime]) -> None:
        """Latency hiding, as XLA's scheduler does it: a collective runs in the background while
        kernels that neither feed it nor use its result compute (FSDP weight gathers issued
        early, gradient all-reduces overlapping the rest of the backward pass). Each collective
        hides at most the time of its independent kernels, and all of them together at most the
        program's compute time."""
        kernels = program.kernels
        coll = [i for i, k in enumerate(kernels) if k.kind in ("collective", "transfer")]
        if not coll:
            return
        producer = {v.id: i for i, k in enumerate(kernels) for v in k.outputs}
        parents = [{producer[v.id] for v in k.inputs if v.id in producer} for k in kernels]
        children: list[set[int]] = [set() for _ in kernels]
        for i, ps in enumerate(parents):
            for q in ps:
                children[q].add(i)

        def reach(start: int, edges: list[set[int]]) -> set[int]:
            seen, stack = set(), [start]
            while stack:
                for nxt in edges[stack.pop()]:
                    if nxt not in seen:
                        seen.add(nxt)
                        stack.append(nxt)
            return seen

        compute = [0.0 if k.kind in ("collective", "transfer") else t.time_s for k, t in zip(kernels, times)]
        budget = sum(compute)
        for i in coll:
            if budget <= 0:
                break
            related = reach(i, parents) | reach(i, children) | {i}
            independent = budget if len(related) == 1 else sum(c for j, c in enumerate(compute) if j not in related)
            t = times[i]
            # Only communication hides (a shard_slice is a local copy: compute, not comm);
            # issuing a collective is never hidden.
            hide = min(t.comm_s, t.time_s) - 1e-6
            hide = min(hide, independent, budget)
            if hide > 0:
                t.time_s -= hide
                t.hidden_s = hide
                budget -= hide

