import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("KERAS_HOME", tempfile.mkdtemp(prefix="tpusim-test-keras-"))
os.environ.setdefault("TPUSIM_VERIFY_IR", "1")  # the IR verifier runs after every compiler pass

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("tpusim", deadline=None, max_examples=40, derandomize=True)
settings.load_profile("tpusim")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
