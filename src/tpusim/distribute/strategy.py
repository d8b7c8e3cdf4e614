"""A TPUStrategy-like helper: plain data parallelism of a Keras model over a slice, the way
the source documents use tf.distribute.TPUStrategy (one replica per device, the batch split
across them, gradients all-reduced)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from jax.sharding import PartitionSpec as P

from tpusim.api import Compiled
from tpusim.api import compile as tpu_compile
from tpusim.distribute.topology import SliceConfigError, parse_system


class TPUStrategy:
    """`strategy = TPUStrategy("v4-32")`; `strategy.training_step(model, x, y)` compiles the
    model's training step data-parallel over every device of the slice."""

    def __init__(self, device: str = "v4-8") -> None:
        system = parse_system(device)
        if system is None:
            raise SliceConfigError(f"'{device}' is not a slice name (e.g. 'v4-32', 'v5e-16')")
        self.device = device
        self.system = system
        self.num_replicas_in_sync = system.slice.devices * system.num_slices

    @contextlib.contextmanager
    def scope(self) -> Iterator["TPUStrategy"]:
        """For code written as `with strategy.scope(): model = ...` (nothing to place here)."""
        yield self

    def _check_batch(self, batch: int) -> None:
        if batch % self.num_replicas_in_sync:
            raise SliceConfigError(f"global batch {batch} must be a multiple of the {self.num_replicas_in_sync} replicas")

    def compile(self, model: Any, x: Any, precision: str = "default") -> Compiled:
        """The model's forward pass, batch split over the replicas."""
        self._check_batch(x.shape[0])
        return tpu_compile(model, x, device=self.device, mesh={"data": self.num_replicas_in_sync},
                           in_specs=(P("data"),), precision=precision)

    def training_step(self, model: Any, x: Any, y: Any, precision: str = "default") -> Compiled:
        """Keras's training step with state replicated and (x, y) split over the replicas."""
        from tpusim.keras.training import training_step

        self._check_batch(x.shape[0])
        return training_step(model, x, y, self.device, precision)
