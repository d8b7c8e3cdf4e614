"""What a compiled step costs on real hardware: time, TFLOP/s, MFU, and time and dollars per
epoch at a given data-set size (prices per chip-hour from the chip files, with their dates)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tpusim.api import Compiled


@dataclass
class StepCost:
    device: str
    step_time_s: float
    flops: float
    tflops: float
    mfu: float  # counted FLOPs of the step / (step time x device peak)
    steps_per_epoch: int
    epoch_time_s: float
    price_usd_per_chip_hour: float | None
    price_date: str | None
    epoch_cost_usd: float | None

    def describe(self) -> str:
        price = (f"${self.epoch_cost_usd:.3g} per epoch at ${self.price_usd_per_chip_hour:.2f}/chip-hour ({self.price_date})"
                 if self.epoch_cost_usd is not None else "no public price for this chip")
        return (f"{self.device}: {self.step_time_s * 1e3:.3f} ms/step, {self.tflops:.1f} TFLOP/s, MFU {self.mfu:.1%}; "
                f"{self.steps_per_epoch} steps/epoch = {self.epoch_time_s:.3f} s/epoch; {price}")


MFU_CONVENTION = ("MFU = FLOPs counted from the compiled step's graph (forward, backward and optimizer; "
                  "2 per multiply-accumulate, convolutions over real input only as XLA counts them, "
                  "1 per elementwise op) / (step time x the device's dense bf16 peak)")


def step_cost(compiled: Compiled, dataset_size: int, batch_size: int) -> StepCost:
    est = compiled.estimate()
    flops = compiled.counts().flops_xla
    chip = compiled.chip
    steps = math.ceil(dataset_size / batch_size)
    epoch_s = steps * est.time_s
    price = chip.price_usd_per_chip_hour.value if chip.price_usd_per_chip_hour else None
    cost = epoch_s / 3600 * price * (chip.cores_per_device / chip.tensorcores_per_chip.value if chip.kind == "tpu" and chip.tensorcores_per_chip else 1.0) if price else None
    return StepCost(chip.name, est.time_s, flops, flops / est.time_s / 1e12 if est.time_s else 0.0,
                    flops / (est.time_s * est.peak_flops) if est.time_s and est.peak_flops else 0.0,
                    steps, epoch_s, price, chip.price_date, cost)
