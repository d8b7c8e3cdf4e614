"""Front end: trace a JAX function or Keras model with JAX, then lower the jaxpr to the IR."""

from tpusim.frontend.trace import Traced, trace
from tpusim.frontend.lower import lower

__all__ = ["Traced", "trace", "lower"]
