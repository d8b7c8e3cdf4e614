"""The learning examples run and learn (each asserts its own result)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize("script,expect", [("train_lstm_text.py", "training accuracy"),
                                           ("transfer_digits.py", "pre-trained base frozen")])
def test_learning_example(script, expect):
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert expect in done.stdout
