"""`Compiled.estimate()`: how long the program takes on the chip, and where the time goes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tpusim.hardware.chip import Chip
from tpusim.program.program import Program
from tpusim.sim.energy import EnergyEstimate, energy_of
from tpusim.sim.calibration import Calibration
from tpusim.sim.cpu_timing import CpuTimer
from tpusim.sim.device_timer import DEFAULT_CONSTANTS, DeviceTimer, KernelTime, TimingConstants
from tpusim.sim.gpu_timing import GpuTimer
from tpusim.sim.timing import TensorCoreTimer

_TIMERS: dict[str, type[DeviceTimer]] = {"tpu": TensorCoreTimer, "gpu": GpuTimer, "cpu": CpuTimer}


def timer_for(chip: Chip, constants: TimingConstants = DEFAULT_CONSTANTS, mesh: Any = None,
              calibration: Calibration | None = None) -> DeviceTimer:
    """The device model of the chip's kind (one per kind, one interface)."""
    return _TIMERS[chip.kind](chip, constants, mesh, calibration)


@dataclass
class Estimate:
    device: str
    time_s: float
    flops: float  # counted FLOPs of the program (IR count, loops x trips)
    hbm_bytes: float  # HBM traffic of the compiled kernels
    peak_hbm_bytes: int
    mxu_flops: float  # useful FLOPs done on the MXUs
    peak_flops: float  # device peak, FLOP/s
    hbm_bandwidth: float  # device HBM bandwidth, B/s
    ops: list[KernelTime]
    matrix_unit: str = "MXU"  # what the device's matrix unit is called ("tensor cores" on a GPU)
    energy: EnergyEstimate | None = None  # per device; None where the chip publishes no power figure

    @property
    def tflops(self) -> float:
        """Achieved TFLOP/s (counted FLOPs / time)."""
        return self.flops / self.time_s / 1e12 if self.time_s else 0.0

    @property
    def mxu_utilization(self) -> float:
        """Useful MXU FLOPs over what the MXUs could have done in the program's time."""
        return self.mxu_flops / (self.time_s * self.peak_flops) if self.time_s and self.peak_flops else 0.0

    @property
    def hbm_utilization(self) -> float:
        return self.hbm_bytes / (self.time_s * self.hbm_bandwidth) if self.time_s else 0.0

    @property
    def communication_s(self) -> float:
        """Time the collectives take in all (overlapped or not)."""
        return sum(op.comm_s for op in self.ops)

    @property
    def exposed_communication_s(self) -> float:
        """Collective time not hidden behind compute: what communication adds to the step."""
        return max(0.0, self.communication_s - sum(op.hidden_s for op in self.ops))

    @property
    def compute_s(self) -> float:
        return self.time_s - self.exposed_communication_s

    def time_by_bound(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for op in self.ops:
            out[op.bound] = out.get(op.bound, 0.0) + op.time_s
        return out

    def top_ops(self, n: int = 5) -> list[KernelTime]:
        return sorted(self.ops, key=lambda o: -o.time_s)[:n]

    def to_dict(self) -> dict[str, Any]:
        """The step's totals as plain numbers (JSON-ready)."""
        out: dict[str, Any] = {
            "device": self.device, "time_s": self.time_s, "flops": self.flops, "tflops": self.tflops,
            "hbm_bytes": self.hbm_bytes, "peak_hbm_bytes": self.peak_hbm_bytes,
            "mxu_utilization": self.mxu_utilization, "hbm_utilization": self.hbm_utilization,
            "communication_s": self.communication_s, "exposed_communication_s": self.exposed_communication_s,
            "matrix_unit": self.matrix_unit, "time_by_bound_s": self.time_by_bound()}
        if self.energy is not None:
            out.update(energy_j=self.energy.joules, average_w=self.energy.average_w, energy_basis=self.energy.basis)
        return out

    def to_pandas(self) -> Any:
        """One row per kernel (loops as one row each): name, kind, time, FLOPs, bytes, bound."""
        import pandas as pd

        return pd.DataFrame([{"kernel": o.name, "kind": o.kind, "time_s": o.time_s, "flops": o.flops, "bytes": o.bytes,
                              "bound": o.bound, "mxu_s": o.mxu_s, "vpu_s": o.vpu_s, "dma_s": o.dma_s,
                              "overhead_s": o.overhead_s, "comm_s": o.comm_s, "hidden_s": o.hidden_s,
                              "where": o.where} for o in self.ops])

    def _repr_html_(self) -> str:
        import html

        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                       for k, v in self.to_dict().items() if not isinstance(v, dict))
        top = "".join(f"<tr><td>{html.escape(o.name)}</td><td>{o.time_s * 1e6:.1f} us</td><td>{o.bound}</td></tr>"
                      for o in self.top_ops(5))
        return (f"<table><caption>estimate on {html.escape(self.device)}</caption>{rows}</table>"
                f"<table><caption>top kernels</caption>{top}</table>")

    def __repr__(self) -> str:
        return (f"Estimate({self.device}: {self.time_s * 1e3:.3f} ms, {self.tflops:.1f} TFLOP/s, "
                f"{self.matrix_unit} {self.mxu_utilization:.1%}, HBM {self.hbm_bytes / 1e9:.3f} GB, peak {self.peak_hbm_bytes / 2**20:.1f} MiB)")


def estimate_program(program: Program, chip: Chip, flops: float,
                     constants: TimingConstants = DEFAULT_CONSTANTS, mesh: Any = None,
                     calibration: Calibration | None = None) -> Estimate:
    timer = timer_for(chip, constants, mesh, calibration)
    ops = timer.time_program(program)
    time_s, hbm = sum(o.time_s for o in ops), sum(o.bytes for o in ops)
    return Estimate(chip.name, time_s, flops, hbm, program.peak_hbm_bytes, sum(o.mxu_flops for o in ops),
                    timer.peak_flops, timer.bw, ops, timer.matrix_unit,
                    energy_of(chip, time_s, flops, hbm, timer.peak_flops))
