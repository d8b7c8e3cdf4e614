"""Train, evaluate and predict a compiled Keras model on the simulated TPU.

The training step is Keras's own pure JAX step, `model.train_step(state, data)` (the function
Keras itself jits): loss, `jax.value_and_grad`, `optimizer.stateless_apply` and the metric
updates. tpusim compiles it once per batch shape and runs every step as its staged program (one
XLA-compiled function, sim/staged.py); the model's variables are written back at the end of each epoch (and on exit), so
frozen layers (`trainable = False`) stay bit-identical.
"""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tpusim.api import Compiled
from tpusim.api import compile as tpu_compile
from tpusim.errors import KerasModelError
from tpusim.hardware.chip import Chip




@dataclass
class History:
    """Like keras.callbacks.History: `history["loss"]`, metrics, `val_*`, plus the simulated
    device time per epoch (`history["device_time_s"]`)."""

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch: list[int] = field(default_factory=list)
    compiled: dict[tuple, Compiled] = field(default_factory=dict, repr=False)

    def _log(self, key: str, value: float) -> None:
        self.history.setdefault(key, []).append(float(value))


def _check_model(model: Any) -> None:
    import keras

    if keras.backend.backend() != "jax":
        raise KerasModelError(f"tpusim.keras needs the JAX backend of Keras, this process uses '{keras.backend.backend()}'; "
                              "set KERAS_BACKEND=jax before importing keras")
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise KerasModelError("call model.compile(optimizer=..., loss=..., metrics=...) before tpusim.keras.fit")


def _state(model: Any) -> tuple[list, list, list, list]:
    return ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
            [v.value for v in model.optimizer.variables], [v.value for v in model.metrics_variables])


def _write_back(model: Any, state: tuple) -> None:
    trainable, non_trainable, opt, metrics = state
    for group, values in ((model.trainable_variables, trainable), (model.non_trainable_variables, non_trainable),
                          (model.optimizer.variables, opt), (model.metrics_variables, metrics)):
        for var, val in zip(group, values):
            var.assign(np.asarray(val))


def _reset_metrics(model: Any, state: tuple) -> tuple:
    trainable, non_trainable, opt, metrics = state
    return trainable, non_trainable, opt, [np.zeros(np.shape(m), np.asarray(m).dtype) for m in metrics]


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def _take(data: Any, s: slice) -> Any:
    return jax.tree.map(lambda a: np.asarray(a)[s], data)


def _length(data: Any) -> int:
    return int(np.shape(jax.tree.leaves(data)[0])[0])


def training_step(model: Any, batch_x: Any, batch_y: Any, device: str | Chip = "v5e", precision: str = "default") -> Compiled:
    """Compile one Keras training step (forward, backward, optimizer, metrics) for a chip. On a
    slice ("v4-16") the step is data parallel: state replicated, the batch split over every
    device (replicated instead when the batch does not divide)."""
    from jax.sharding import PartitionSpec as P

    from tpusim.distribute.topology import parse_system

    _check_model(model)
    model._symbolic_build(data_batch=(batch_x, batch_y))
    system = parse_system(device) if isinstance(device, str) else None
    sharding: dict[str, Any] = {}
    if system is not None:
        replicas = system.slice.devices * system.num_slices
        split = np.shape(jax.tree.leaves(batch_x)[0])[0] % replicas == 0
        sharding = {"mesh": {"data": replicas}, "in_specs": (None, P("data") if split else None)}
    return tpu_compile(_named_train_step(model), _state(model), (batch_x, batch_y), device=device, precision=precision,
                       donate_argnums=0, **sharding)  # Keras's jitted train step donates its state too


def _named_train_step(model: Any) -> Callable[..., Any]:
    """Keras's train_step, with its state leaves named for HBM reports ("parameters['dense/kernel']")."""
    groups = (("parameters", model.trainable_variables), ("non_trainable", model.non_trainable_variables),
              ("optimizer_state", model.optimizer.variables), ("metrics", model.metrics_variables))

    def train_step(state: tuple, data: tuple) -> Any:
        return model.train_step(state, data)

    train_step.__name__ = f"{model.name}_train_step"
    train_step.tpusim_arg_names = [f"{g}['{v.path}']" for g, vs in groups for v in vs]  # type: ignore[attr-defined]
    return train_step


_PROGRAMS: "weakref.WeakKeyDictionary[Any, dict[tuple, Compiled]]" = weakref.WeakKeyDictionary()


def _compiled_for(model: Any, key: tuple, build: Callable[[], Compiled]) -> Compiled:
    """Compiled programs are kept per model and per (step kind, batch shapes, device, precision,
    optimizer), so repeated fit/evaluate calls reuse them (their state is passed in, not baked)."""
    cache = _PROGRAMS.setdefault(model, {})
    key = key + (id(getattr(model, "optimizer", None)),)
    if key not in cache:
        cache[key] = build()
    return cache[key]


def _shapes(data: Any) -> tuple:
    return tuple(np.shape(a) for a in jax.tree.leaves(data))


def _progress(console: Console, verbose: int) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[logs]}"), console=console, disable=verbose == 0, transient=False)


def fit(model: Any, x: Any, y: Any, *, epochs: int = 1, batch_size: int = 32, device: str | Chip = "v5e",
        validation_data: tuple[Any, Any] | None = None, callbacks: list[Any] | None = None, verbose: int = 1,
        precision: str = "default", shuffle: bool = True, seed: int = 0, console: Console | None = None) -> History:
    """Train `model` (already `model.compile`d) with every step computed by tpusim.

    Returns a History with per-epoch loss/metrics (and val_* with validation_data) and the
    simulated device time per epoch on `device`.
    """
    _check_model(model)
    console = console or Console()
    n = _length(x)
    history = History()
    callbacks = list(callbacks or [])
    for cb in callbacks:
        if hasattr(cb, "set_model"):
            cb.set_model(model)
        if hasattr(cb, "on_train_begin"):
            cb.on_train_begin()
    rng = np.random.default_rng(seed)
    model._symbolic_build(data_batch=(_take(x, slice(0, min(batch_size, n))), _take(y, slice(0, min(batch_size, n)))))
    state = _state(model)
    for epoch in range(epochs):
        for cb in callbacks:
            if hasattr(cb, "on_epoch_begin"):
                cb.on_epoch_begin(epoch)
        order = rng.permutation(n) if shuffle else np.arange(n)
        state = _reset_metrics(model, state)
        device_time = 0.0
        logs: dict[str, Any] = {}
        t0 = time.perf_counter()
        with _progress(console, verbose) as progress:
            task = progress.add_task(f"epoch {epoch + 1}/{epochs}", total=math.ceil(n / batch_size), logs="")
            for s in _batches(n, batch_size):
                idx = order[s]
                bx, by = _take(x, idx), _take(y, idx)
                key = ("train", _shapes((bx, by)), str(device), precision)
                compiled = _compiled_for(model, key, lambda: training_step(model, bx, by, device, precision))
                history.compiled[key] = compiled
                logs, state = compiled.run(state, (bx, by))
                device_time += compiled.estimate().time_s
                progress.update(task, advance=1, logs=" ".join(f"{k} {float(v):.4f}" for k, v in logs.items()))
        _write_back(model, state)
        epoch_logs = {k: float(v) for k, v in logs.items()}
        if validation_data is not None:
            val = evaluate(model, *validation_data, batch_size=batch_size, device=device, precision=precision, verbose=0)
            epoch_logs.update({f"val_{k}": v for k, v in val.items()})
        for k, v in epoch_logs.items():
            history._log(k, v)
        history._log("device_time_s", device_time)
        history.epoch.append(epoch)
        if verbose:
            console.print(f"epoch {epoch + 1}/{epochs}: " + " - ".join(f"{k} {v:.4f}" for k, v in epoch_logs.items())
                          + f" - simulated {device_time * 1e3:.2f} ms on {device} ({time.perf_counter() - t0:.1f} s on this CPU)",
                          soft_wrap=True)
        for cb in callbacks:
            if hasattr(cb, "on_epoch_end"):
                cb.on_epoch_end(epoch, dict(epoch_logs))
    for cb in callbacks:
        if hasattr(cb, "on_train_end"):
            cb.on_train_end()
    return history


def _eval_step(model: Any, bx: Any, by: Any, device: str | Chip, precision: str) -> Compiled:
    state = _state(model)
    eval_state = (state[0], state[1], state[3])

    def test_step(state: tuple, data: tuple) -> Any:
        return model.test_step(state, data)

    return tpu_compile(test_step, eval_state, (bx, by), device=device, precision=precision)


def evaluate(model: Any, x: Any, y: Any, *, batch_size: int = 32, device: str | Chip = "v5e", precision: str = "default",
             verbose: int = 1) -> dict[str, float]:
    """Loss and metrics over (x, y), every batch computed by tpusim. Returns {name: value}."""
    _check_model(model)
    n = _length(x)
    model._symbolic_build(data_batch=(_take(x, slice(0, min(batch_size, n))), _take(y, slice(0, min(batch_size, n)))))
    trainable, non_trainable, _, metrics = _state(model)
    metrics = [np.zeros(np.shape(m), np.asarray(m).dtype) for m in metrics]
    logs: dict[str, Any] = {}
    for s in _batches(n, batch_size):
        bx, by = _take(x, s), _take(y, s)
        key = ("test", _shapes((bx, by)), str(device), precision)
        compiled = _compiled_for(model, key, lambda: _eval_step(model, bx, by, device, precision))
        logs, (trainable, non_trainable, metrics) = compiled.run((trainable, non_trainable, metrics), (bx, by))
    result = {k: float(v) for k, v in logs.items()}
    if verbose:
        Console().print("evaluate: " + " - ".join(f"{k} {v:.4f}" for k, v in result.items()))
    return result


def predict(model: Any, x: Any, *, batch_size: int = 32, device: str | Chip = "v5e", precision: str = "default") -> np.ndarray:
    """Model outputs for x, every batch computed by tpusim (inference mode)."""
    n = _length(x)
    trainable, non_trainable = [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables]

    def predict_step(state: tuple, data: Any) -> Any:
        return model.predict_step(state, (data,))[0]

    outs = []
    for s in _batches(n, batch_size):
        bx = _take(x, s)
        key = ("predict", _shapes(bx), str(device), precision)
        compiled = _compiled_for(model, key, lambda: tpu_compile(predict_step, (trainable, non_trainable), bx,
                                                                 device=device, precision=precision))
        outs.append(compiled.run((trainable, non_trainable), bx))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outs)
