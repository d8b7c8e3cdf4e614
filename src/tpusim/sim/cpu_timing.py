"""The host-CPU model: a roofline per kernel (the slower of arithmetic at the socket's peak and
memory at its rated bandwidth) plus a fixed dispatch cost. The real host CPU is also measured
directly with JAX; this model exists to place a CPU next to accelerators in one table."""

from __future__ import annotations

from tpusim.program.program import Kernel, MxuPlan
from tpusim.sim.device_timer import Bound, DeviceTimer, KernelTime


class CpuTimer(DeviceTimer):
    matrix_unit = "matrix engine"
    vector_unit = "vector units"

    def matmul_seconds(self, plan: MxuPlan, hbm_bytes: float, megacore: bool = True) -> float:
        """The roofline below, for a matmul of this plan."""
        compute = plan.useful_flops / self.peak_flops if self.peak_flops else 0.0
        return self.cal.kernel_floor_s + max(compute, self.dma_seconds(hbm_bytes))

    def time_compute_kernel(self, kernel: Kernel) -> KernelTime:
        c = kernel.counts
        compute = (c.flops + c.transcendentals) / self.peak_flops if self.peak_flops else 0.0
        memory = self.dma_seconds(kernel.hbm_bytes)
        steady = max(compute, memory)
        floor = self.cal.kernel_floor_s
        bound: Bound = "overhead" if floor > steady else ("compute" if compute >= memory else "memory")
        mxu_flops = float(kernel.mxu.useful_flops) if kernel.mxu is not None and kernel.mxu.engine == "mxu" else 0.0
        return KernelTime(kernel.name, kernel.kind, steady + floor, c.flops, float(kernel.hbm_bytes),
                          bound, compute, 0.0, memory, floor, mxu_flops=mxu_flops, where=kernel.where)
