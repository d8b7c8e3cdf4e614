"""Every Python example in the README runs as written (each in a fresh interpreter)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path):
    env = dict(os.environ, KERAS_BACKEND="jax", MPLBACKEND="Agg")
    done = subprocess.run([sys.executable, "-c", BLOCKS[index]], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert done.returncode == 0, f"README example {index} failed:\n{BLOCKS[index]}\n{done.stderr[-3000:]}"
