"""Per-generation calibration of the TensorCore kernel model.

The kernel model (sim/timing.py) is built from mechanisms and sourced chip facts; a handful of
quantities no chip file states are fitted, per TPU generation, on a stated subset of public
measurements (`tpusim validate --refit` redoes the fit and prints it). Every other measured
kernel is held out. Each constant names what it calibrates and the rows it was fitted on, in
`calibration.yaml`; generations without measurements use the `default` entry, whose values are
the means over the measured generations (labelled as such).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from tpusim.hardware.chip import Chip

DATA = Path(__file__).parent / "calibration.yaml"


@dataclass(frozen=True)
class Calibration:
    """What one generation's kernels achieve beyond the chip file's peaks."""

    kernel_floor_s: float  # device time of the smallest kernel: launch, scalar setup, first DMA round trip
    hbm_efficiency: float  # fraction of rated HBM bandwidth a streaming kernel on all of a device's TensorCores sustains
    mxu_efficiency: float  # fraction of MXU peak a large, well-tiled matmul sustains
    # VPU cycles per (8,128) vreg of float16 operand converted to bf16 on its way to an MXU
    # without a native f16 path (v4): each operand block is converted every time it is fed (the
    # lhs once per N block, the rhs once per M block), and the MXU waits for it. 0: native.
    f16_convert_cycles: float = 0.0
    # Share of the systolic array's first-fold fill and drain (weight load, skew, column travel:
    # 2R + C - 2 cycles) that a kernel's time shows; the rest overlaps the operand DMA and the
    # kernel's fixed setup already counted in kernel_floor_s. Matters only for tiny matmuls.
    mxu_fill_share: float = 1.0
    # Fraction of the chip's rated HBM bandwidth ONE TensorCore of a megacore chip (v4, v5p)
    # sustains while the other is idle; 0 means half of hbm_efficiency. One core's DMA engines
    # cannot pull the whole chip's bandwidth (v4: a bare add on one core streams at about a
    # third of what a two-core fusion does).
    one_core_hbm_fraction: float = 0.0
    # Sustained fraction of the rated ICI link bandwidth a large collective reaches (1: the
    # chip file's rate, for generations without a measured collective of their own).
    ici_efficiency: float = 1.0
    # GPUs: the fixed time of each wave of output tiles over the SMs (a CTA's prologue fills its
    # operand pipeline and its epilogue stores the tile; neither overlaps the next wave's
    # main loop in a non-persistent GEMM kernel).
    wave_latency_s: float = 0.0
    # GPUs: sustained fraction of the TF32 tensor-core peak (f32 matmuls at default precision);
    # 0 means the same as mxu_efficiency.
    tf32_efficiency: float = 0.0
    # GPUs: the fixed device time of a kernel that is not a GEMM (XLA's loop and reduction
    # fusions: no operand pipeline to fill, no tile waves); 0 means kernel_floor_s.
    loop_floor_s: float = 0.0
    # GPUs: in a fused (flash) attention kernel, the share of the shorter of tensor-core and
    # CUDA-core work (the softmax) that runs under the longer; 1: fully hidden.
    attention_overlap: float = 1.0
    generation: str = "default"

    def describe(self) -> dict[str, dict[str, str | float]]:
        entry = _table().get(self.generation, _table()["default"])
        return {f.name: {"value": getattr(self, f.name), **{k: v for k, v in entry.get(f.name, {}).items() if k != "value"}}
                for f in fields(self) if f.name != "generation"}


# Used only where calibration.yaml's default entry lacks a field.
DEFAULT = Calibration(kernel_floor_s=1.0e-6, hbm_efficiency=0.85, mxu_efficiency=0.9)


@lru_cache(maxsize=1)
def _table() -> dict[str, dict]:
    return yaml.safe_load(DATA.read_text())["generations"]


def calibration_for(chip_name: str, default: str = "default") -> Calibration:
    """The calibration of `chip_name`'s generation (the `default` entry for chips without data)."""
    table = _table()
    base = table[default]
    entry = table.get(chip_name, base)
    values = {f.name: float(entry.get(f.name, base.get(f.name, {})).get("value", getattr(DEFAULT, f.name)))
              for f in fields(Calibration) if f.name != "generation"}
    return Calibration(**values, generation=chip_name if chip_name in table else default)


def calibration_of(chip: "Chip") -> Calibration:
    """The calibration a chip is timed with: the entry its file names (GPUs share their
    architecture's), else its own name's, else its kind's default (TPUs: `default`, GPUs:
    `gpu-default`, CPUs: `cpu-default`)."""
    default = "default" if chip.kind == "tpu" else f"{chip.kind}-default"
    return calibration_for(chip.calibration or chip.name, default)
