"""Make `import keras` work without TensorFlow and without writing into the user's home.

Keras 3 picks its backend from KERAS_BACKEND (else ~/.keras/keras.json, whose default is
TensorFlow) and creates ~/.keras on import. tpusim traces with JAX, so it selects the JAX
backend when the user has not chosen one, and points KERAS_HOME at a temporary folder only when
the user has no Keras folder of their own.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def prepare_keras_environment() -> None:
    """Set KERAS_BACKEND/KERAS_HOME defaults before keras is first imported."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    if "KERAS_HOME" not in os.environ and not (Path.home() / ".keras").exists():
        os.environ["KERAS_HOME"] = str(Path(tempfile.gettempdir()) / "tpusim-keras-home")
