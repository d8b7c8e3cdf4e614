"""tpusim: a software TPU. Compile a JAX function or Keras model the way XLA compiles for a
TPU, run it with bf16 MXU numerics, and see what the chip does with it."""

from tpusim._env import prepare_keras_environment

prepare_keras_environment()

from tpusim.api import Compiled, Jitted, Lowered, Traced, compile, jit, resolve_device  # noqa: E402
from tpusim.comparison import Comparison, compare  # noqa: E402
from tpusim.errors import (  # noqa: E402
    ChipConfigError,
    InputMismatchError,
    KerasModelError,
    OutOfMemoryError,
    ScriptError,
    ShardingError,
    SliceConfigError,
    TpusimError,
    TraceError,
    UnknownDeviceError,
    UnsupportedOpError,
)
from tpusim.hardware.chip import Chip, load_chip, list_devices  # noqa: E402
from tpusim.ir.primitives import supported_primitives  # noqa: E402


def devices() -> list[str]:
    """Names of the chips in the built-in catalog."""
    return list_devices()


__all__ = [
    "Chip", "Compiled", "Comparison", "Jitted", "Lowered", "Traced", "compare", "compile", "devices", "jit",
    "load_chip", "resolve_device", "supported_primitives",
    "TpusimError", "ChipConfigError", "UnknownDeviceError", "UnsupportedOpError", "OutOfMemoryError",
    "InputMismatchError", "TraceError", "ShardingError", "SliceConfigError", "ScriptError", "KerasModelError",
]
__version__ = "0.1.0"
