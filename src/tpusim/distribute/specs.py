"""Ready-made PartitionSpecs for the common strategies, in JAX's own vocabulary."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import PartitionSpec as P


def fsdp_specs(tree: Any, axis: str, axis_size: int) -> Any:
    """FSDP / ZeRO-3: split every array along its largest dimension that `axis_size` divides
    (arrays with none stay replicated)."""

    def spec(x: Any) -> P | None:
        shape = np.shape(x)
        best = None
        for d, size in enumerate(shape):
            if size % axis_size == 0 and size >= axis_size and (best is None or size > shape[best]):
                best = d
        if best is None:
            return None
        return P(*([None] * best + [axis]))

    return jax.tree.map(spec, tree)


def batch_specs(tree: Any, axis: str = "data") -> Any:
    """Data parallelism: split every array's leading (batch) dimension."""
    return jax.tree.map(lambda x: P(axis) if np.ndim(x) else None, tree)
