"""A Keras callback for ordinary `model.fit`: at the first batch it compiles the training step
for a chosen TPU and reports what each epoch would cost there; training goes on unchanged."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Console

from tpusim.cost import StepCost, step_cost


def _callback_base() -> type:
    import keras

    return keras.callbacks.Callback


class TPUCostCallback(_callback_base()):  # type: ignore[misc]
    """`model.fit(..., callbacks=[TPUCostCallback(devices=["v5e", "v6e"], dataset_size=60000)])`.

    The batch's shapes come from `sample_batch=(x, y)` if given; otherwise from the model's
    input shape and `batch_size`, with labels shaped like a sparse (integer) or dense target
    depending on the loss. Results are kept in `self.costs` (device -> StepCost).
    """

    def __init__(self, devices: str | list[str] = "v5e", dataset_size: int | None = None, batch_size: int = 32,
                 sample_batch: tuple[Any, Any] | None = None, precision: str = "default", verbose: int = 1) -> None:
        super().__init__()
        self.devices = [devices] if isinstance(devices, str) else list(devices)
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.sample_batch = sample_batch
        self.precision = precision
        self.verbose = verbose
        self.costs: dict[str, StepCost] = {}
        self._done = False

    def _batch(self) -> tuple[Any, Any]:
        if self.sample_batch is not None:
            return self.sample_batch
        model = self.model
        in_shape = tuple(model.inputs[0].shape[1:])
        in_dtype = model.inputs[0].dtype
        x = np.zeros((self.batch_size, *in_shape), dtype=in_dtype)
        out_shape = tuple(model.outputs[0].shape[1:])
        loss = str(getattr(model, "loss", "")).lower()
        y = np.zeros((self.batch_size,), np.int32) if "sparse" in loss else np.zeros((self.batch_size, *out_shape), np.float32)
        return x, y

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self._done:
            return
        self._done = True
        from tpusim.keras.training import training_step

        bx, by = self._batch()
        steps = (self.params or {}).get("steps") or 1
        size = self.dataset_size or steps * len(bx)
        console = Console()
        for device in self.devices:
            compiled = training_step(self.model, bx, by, device, self.precision)
            self.costs[device] = step_cost(compiled, size, len(bx))
            if self.verbose:
                console.print(f"[tpusim] training step on {self.costs[device].describe()}")
