"""Trace a user's JAX function or Keras 3 model into a closed jaxpr (no data needed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import numpy as np

from tpusim.errors import TpusimError, TraceError




@dataclass
class Traced:
    name: str
    closed_jaxpr: Any  # jax.extend.core.ClosedJaxpr
    in_tree: Any
    out_tree: Any
    in_avals: list[jax.ShapeDtypeStruct]
    is_keras: bool
    const_names: dict[int, str]  # id(closed-over array) -> a readable name (Keras variable path)
    in_names: list[str]  # one per flat input: its pytree path, e.g. "params['w1']"


def is_keras_model(obj: Any) -> bool:
    return type(obj).__module__.startswith("keras") and hasattr(obj, "stateless_call")


def keras_forward(model: Any) -> Callable[..., Any]:
    """The model's inference forward pass as a pure function of its inputs, with its current
    weights closed over (they become the program's parameters in HBM)."""
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def forward(*inputs: Any) -> Any:
        outputs, _ = model.stateless_call(trainable, non_trainable, *inputs, training=False)
        return outputs

    forward.__name__ = getattr(model, "name", "keras_model")
    return forward


def _as_spec(x: Any) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return jax.ShapeDtypeStruct(tuple(x.shape), x.dtype)
    arr = np.asarray(x)
    dtype = jax.dtypes.canonicalize_dtype(arr.dtype)
    return jax.ShapeDtypeStruct(arr.shape, dtype)


def trace(fn_or_model: Any, *example_args: Any, mesh_axes: dict[str, int] | None = None,
          mesh_is_default: bool = False) -> Traced:
    """Trace with JAX. Example args may be arrays or jax.ShapeDtypeStruct (pytrees allowed).
    With `mesh_axes`, an abstract mesh is in context so jax.lax.with_sharding_constraint works.
    A default mesh (the user named none) gives way to a shard_map's own mesh: JAX refuses a
    context mesh that differs from it, so such a function is traced without one."""
    keras = is_keras_model(fn_or_model)
    fn = keras_forward(fn_or_model) if keras else fn_or_model
    const_names = {id(v.value): v.path for v in fn_or_model.weights} if keras else {}
    if not callable(fn):
        raise TraceError(f"expected a function or a Keras model, got {type(fn_or_model).__name__}")
    specs = jax.tree.map(_as_spec, example_args)
    flat_specs, in_tree = jax.tree.flatten(specs)
    in_names = [f"arg{path[0].idx}{jax.tree_util.keystr(tuple(path[1:]))}"
                for path, _ in jax.tree_util.tree_flatten_with_path(specs)[0]]
    given = getattr(fn, "tpusim_arg_names", None)  # a wrapper may name its leading leaves
    if given:
        in_names[: len(given)] = list(given)
    try:
        try:
            if mesh_axes:
                abstract = jax.sharding.AbstractMesh(tuple(mesh_axes.values()), tuple(mesh_axes))
                with jax.sharding.use_abstract_mesh(abstract):
                    closed, out_shapes = jax.make_jaxpr(fn, return_shape=True)(*specs)
            else:
                closed, out_shapes = jax.make_jaxpr(fn, return_shape=True)(*specs)
        except ValueError as e:
            if not (mesh_is_default and "mesh passed to shard_map" in str(e)):
                raise
            closed, out_shapes = jax.make_jaxpr(fn, return_shape=True)(*specs)
    except TpusimError:
        raise
    except Exception as e:  # the user's code failed under JAX tracing
        shown = [f"{s.dtype}{list(s.shape)}" for s in flat_specs[:8]]
        if len(flat_specs) > 8:
            shown.append(f"... {len(flat_specs) - 8} more")
        raise TraceError(
            f"JAX could not trace {getattr(fn, '__name__', 'the function')} with example arguments "
            f"[{', '.join(shown)}]: {type(e).__name__}: {e}"
        ) from e
    out_tree = jax.tree.structure(out_shapes)
    name = getattr(fn, "__name__", "fn")
    return Traced(name, closed, in_tree, out_tree, flat_specs, keras, const_names, in_names)
