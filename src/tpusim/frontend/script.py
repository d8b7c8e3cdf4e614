"""Load a user's model script for `tpusim run FILE.py`.

The convention: the script defines, at module level,
    model  = a Keras 3 model or a JAX function
    inputs = its example arguments (one array/ShapeDtypeStruct, or a tuple of them)
or a function `tpusim_model()` that returns `(model, inputs)`. Optional: `precision` (the default
precision), and for slices `mesh` (axis sizes) and `in_specs` (PartitionSpecs per input).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from tpusim.errors import ScriptError




def load_model_script(path: str | Path) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise ScriptError(f"no such script: {path}")
    spec = importlib.util.spec_from_file_location(f"tpusim_user_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ScriptError(f"running {path} failed: {type(e).__name__}: {e}") from e
    finally:
        sys.path.pop(0)
    if hasattr(module, "tpusim_model"):
        model, inputs = module.tpusim_model()
    elif hasattr(module, "model") and hasattr(module, "inputs"):
        model, inputs = module.model, module.inputs
    else:
        raise ScriptError(
            f"{path} must define `model` and `inputs` (example arguments), or a function "
            "`tpusim_model()` returning (model, inputs)")
    if not isinstance(inputs, tuple):
        inputs = (inputs,)
    options = {"precision": getattr(module, "precision", "default"), "mesh": getattr(module, "mesh", None),
               "in_specs": getattr(module, "in_specs", None)}
    return model, inputs, options
