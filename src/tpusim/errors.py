"""Typed errors: every failure a user can cause names the problem and the fix."""

from __future__ import annotations


class TpusimError(Exception):
    """Base class of every error tpusim raises on purpose."""


class ChipConfigError(TpusimError):
    """A chip description file is missing, unreadable or invalid (names the file and the field)."""


class UnknownDeviceError(TpusimError):
    """A device name that is neither in the catalog nor a path to a chip file."""


class UnsupportedOpError(TpusimError):
    """A JAX primitive (or a parameter of one) that tpusim cannot compile yet."""

    def __init__(self, primitive: str, where: str, detail: str = "") -> None:
        self.primitive = primitive
        self.where = where
        msg = f"unsupported operation '{primitive}'"
        if detail:
            msg += f" ({detail})"
        msg += f" at {where}" if where else ""
        msg += (
            ". Rewrite that part of the model with supported operations, or open an issue naming "
            "this primitive."
        )
        super().__init__(msg)


class OutOfMemoryError(TpusimError):
    """The compiled program's peak HBM use exceeds the chip's HBM."""

    def __init__(self, device: str, peak_bytes: int, capacity_bytes: int, largest: list[tuple[str, int]],
                 by_kind: list[tuple[str, int]] | None = None, rematerialized: int = 0) -> None:
        self.peak_bytes = peak_bytes
        self.capacity_bytes = capacity_bytes
        self.largest = largest
        self.by_kind = dict(by_kind or [])
        gib = 2**30
        lines = ", ".join(f"{name} {size / gib:.3f} GiB" for name, size in largest)
        kinds = ", ".join(f"{kind} {size / gib:.2f} GiB" for kind, size in (by_kind or []))
        tried = (f" (after rematerializing {rematerialized / gib:.2f} GiB of elementwise values, as XLA does "
                 "when a program exceeds HBM)") if rematerialized else ""
        super().__init__(
            f"program needs {peak_bytes / gib:.2f} GiB of HBM at its peak{tried} but one {device} device has "
            f"{capacity_bytes / gib:.2f} GiB. Live at the peak: {kinds}. Largest buffers: {lines}. "
            "Use a smaller batch, bf16 parameters/activations, rematerialization, or a chip (or slice) with more HBM."
        )


class InputMismatchError(TpusimError):
    """Arguments passed to `Compiled.run` do not match the shapes/dtypes it was compiled for."""


class TraceError(TpusimError):
    """The user's function could not be traced by JAX with the given example arguments."""


class ScriptError(TpusimError):
    """A model script that cannot be loaded or does not follow the convention."""


class KerasModelError(TpusimError):
    """The Keras model is not ready for tpusim.keras (not compiled, wrong backend...)."""


class ShardingError(TpusimError):
    """A sharding that cannot be applied (unknown mesh axis, indivisible dimension, ...)."""


class SliceConfigError(TpusimError):
    """A slice name or shape that does not exist for that TPU version."""
