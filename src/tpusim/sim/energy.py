"""Energy and power of an estimate, from published chip power figures. Every number here is an
estimate, and says what it rests on.

    E = P_idle x t + e_op x operations + e_byte x HBM bytes,   average power = E / t

- P_idle: the chip's measured idle power (TPU v1, v3 and v4 publish it); otherwise
  IDLE_SHARE x its maximum, IDLE_SHARE being the mean of v3's and v4's measured min/max
  (123/262 and 90/192 W: 0.47).
- Maximum: the measured maximum (v1, v3, v4), else the TDP / board power (GPUs, v2).
- e_op = (P_max - P_idle) / peak FLOP/s: a chip whose matrix units run at their peak draws its
  maximum (the heaviest loads these chips see are large matmuls). Vector operations cost the
  same per operation (an assumption: no per-unit figure is published).
- e_byte: HBM access energy, HBM_PJ_PER_BIT (HBM2's ~3.9 pJ/bit, O'Connor et al., "Fine-Grained
  DRAM", MICRO 2017), used for every generation's memory.
- The average power is capped at the maximum. Interconnect (ICI, NVLink) energy is left out:
  no per-byte figure is published for it.
A chip with neither a measured nor a rated power has no energy estimate (None).
"""

from __future__ import annotations

from dataclasses import dataclass

from tpusim.hardware.chip import Chip

IDLE_SHARE = (123 / 262 + 90 / 192) / 2  # TPU v3 and v4, Google Cloud's measured min / max
HBM_PJ_PER_BIT = 3.9


@dataclass(frozen=True)
class EnergyEstimate:
    """Energy of one step on one device (a chip, or its share when a chip is several devices)."""

    joules: float
    average_w: float
    static_j: float  # idle power over the step
    compute_j: float  # matrix and vector operations
    memory_j: float  # HBM traffic
    idle_w: float
    max_w: float
    basis: str  # which figures it rests on

    def __repr__(self) -> str:
        return (f"EnergyEstimate({self.joules * 1e3:.3f} mJ, {self.average_w:.0f} W average; idle {self.idle_w:.0f} W, "
                f"max {self.max_w:.0f} W; {self.basis})")


def power_range(chip: Chip) -> tuple[float, float, str] | None:
    """(idle W, max W, basis) per device of `chip`, or None without a published figure."""
    share = chip.device_fraction
    if chip.max_power_w is not None:
        top, basis = chip.max_power_w.value, f"measured max power ({chip.max_power_w.source})"
    elif chip.tdp_w is not None:
        top, basis = chip.tdp_w.value, f"TDP ({chip.tdp_w.source})"
    else:
        return None
    if chip.idle_power_w is not None:
        idle, basis = chip.idle_power_w.value, basis + f", measured idle ({chip.idle_power_w.source})"
    else:
        idle, basis = IDLE_SHARE * top, basis + f", idle assumed {IDLE_SHARE:.0%} of it (TPU v3/v4 measured ratio)"
    return idle * share, top * share, basis


def energy_of(chip: Chip, time_s: float, operations: float, hbm_bytes: float, peak_flops: float) -> EnergyEstimate | None:
    """Energy of a step that takes `time_s` and does `operations` and `hbm_bytes` of work."""
    powers = power_range(chip)
    if powers is None or time_s <= 0 or not peak_flops:
        return None
    idle, top, basis = powers
    per_op = (top - idle) / peak_flops
    per_byte = HBM_PJ_PER_BIT * 8e-12
    static, compute, memory = idle * time_s, per_op * operations, per_byte * hbm_bytes
    joules = min(static + compute + memory, top * time_s)
    return EnergyEstimate(joules, joules / time_s, static, compute, memory, idle, top, basis)
