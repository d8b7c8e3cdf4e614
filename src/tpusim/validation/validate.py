"""`tpusim validate`: predicted vs published measured timings, and the fit of the two global
calibration constants on their stated subsets.

Calibration (see TimingConstants): `collective_fixed_s` is fitted on the entries marked
`fit: collective_fixed_s` (the smallest ppermute payloads, where the fixed cost dominates).
`grid_step_s` is fitted on the entries marked
`fit: grid_step_s` (Pallas kernels with 128-cube blocks, where per-step overhead dominates):
the residual (measured - modelled without it - dispatch) divided by the number of grid steps,
averaged. `host_dispatch_s` (the cost of one jitted call from Python, added only to entries
measured that way) is then fitted on the entries marked `fit: host_dispatch_s`. Every other
entry is held out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import yaml

from tpusim.api import compile as tpu_compile
from tpusim.hardware.chip import resolve_device
from tpusim.sim.timing import DEFAULT_CONSTANTS, TimingConstants

DATA = Path(__file__).parent / "measurements.yaml"


@dataclass
class Check:
    id: str
    device: str
    workload: str
    measured_s: float
    predicted_s: float
    fit: str | None
    source: str

    @property
    def error(self) -> float:
        return (self.predicted_s - self.measured_s) / self.measured_s


def load_measurements() -> dict[str, Any]:
    return yaml.safe_load(DATA.read_text())


def _workload(entry: dict[str, Any]):
    dtype = jnp.dtype(entry.get("dtype", "float32"))
    a = jax.ShapeDtypeStruct((entry["m"], entry["k"]), dtype)
    b = jax.ShapeDtypeStruct((entry["k"], entry["n"]), dtype)
    if entry.get("epilogue") == "relu":
        return (lambda x, y: jax.nn.relu(x @ y)), (a, b)
    return (lambda x, y: x @ y), (a, b)


def _describe(entry: dict[str, Any]) -> str:
    if entry["kind"] == "training_step":
        return f"{entry['model']} training step, batch {entry['batch']}, {entry.get('policy', 'float32')}"
    if entry["kind"] == "llm_training_step":
        return (f"LLM training step, {entry['layers']} x d{entry['d_model']}, {entry['per_device_batch']} x "
                f"{entry['seq']} tokens per device, FSDP {entry['fsdp']} x {entry.get('slices', 1)} slices")
    if entry["kind"] != "matmul":
        return f"{entry['kind']} {entry['bytes'] / 2**10:g} KiB per device"
    text = f"{entry['kind']} {entry['m']}x{entry['k']}x{entry['n']} {entry.get('dtype', 'f32')}"
    if "tiles" in entry:
        text += " blocks " + "x".join(str(t) for t in entry["tiles"])
    if entry.get("epilogue"):
        text += f" +{entry['epilogue']}"
    return text


def _collective_time(entry: dict[str, Any], constants: TimingConstants, ici_efficiency: float | None = None) -> float:
    from tpusim.distribute import parse_system
    from tpusim.distribute.collectives import collective_cost
    from tpusim.distribute.mesh import make_mesh
    from tpusim.sim.calibration import calibration_for

    system = parse_system(entry["device"])
    group = int(entry.get("group", system.slice.devices))  # replica group: the first `group` devices' rings
    rest = system.slice.devices // group
    mesh = make_mesh(system, {"data": group, **({"rest": rest} if rest > 1 else {})})
    eff = calibration_for(system.chip.name).ici_efficiency if ici_efficiency is None else ici_efficiency
    return collective_cost(entry["kind"], float(entry["bytes"]), ("data",), mesh, eff).time_s + constants.collective_fixed_s


def _generation(device: str) -> str:
    """The chip generation of a measurement's device ('tpu7x-4', '2xv4-128', 'v5e')."""
    from tpusim.distribute import parse_system

    system = parse_system(device)
    return system.chip.name if system is not None else resolve_device(device).name


def fit_ici_efficiency(data: dict[str, Any] | None = None) -> dict[str, float]:
    """Per generation, the ICI link efficiency that makes the entries marked `fit: ici_efficiency`
    right on average (their bandwidth term scaled; latency and fixed cost kept)."""
    data = data or load_measurements()
    by_gen: dict[str, list[float]] = {}
    for e in data["measurements"]:
        if e.get("fit") != "ici_efficiency":
            continue
        at_rated = _collective_time(e, DEFAULT_CONSTANTS, 1.0)
        fixed = _collective_time(e, DEFAULT_CONSTANTS, 1e9)  # bandwidth term vanishes
        gen = _generation(e["device"])
        by_gen.setdefault(gen, []).append((at_rated - fixed) / (e["measured_s"] - fixed))
    return {gen: round(sum(v) / len(v), 4) for gen, v in by_gen.items()}


def _training_step_time(entry: dict[str, Any], constants: TimingConstants) -> float:
    """One data-parallel replica's training step: the Keras model (keras.applications
    architecture) compiled as Keras compiles `fit`, under the entry's dtype policy and optimizer,
    on one device, which it must fit."""
    import keras

    from tpusim.validation.memory_programs import _keras_train, _resnet50

    models = {"resnet50": _resnet50,
              "efficientnetb0": lambda: keras.applications.EfficientNetB0(weights=None, input_shape=(224, 224, 3))}
    if entry["model"] not in models:
        raise ValueError(f"measurement {entry['id']!r}: no training workload for model {entry['model']!r} "
                         f"(known: {', '.join(models)})")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(entry.get("policy", "float32"))
    try:
        optimizer = (keras.optimizers.RMSprop(0.016, rho=0.9, momentum=0.9, epsilon=1e-3)
                     if entry.get("optimizer") == "rmsprop" else keras.optimizers.SGD(0.1, momentum=0.9))
        program = _keras_train(entry["model"], models[entry["model"]], entry["batch"], optimizer)()
        # The measured run fitted its device: so must tpusim's (rematerializing as XLA would).
        compiled = tpu_compile(program.fn, *program.args, device=entry["device"],
                               donate_argnums=program.donate_argnums)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return compiled.estimate(constants).time_s


_LLM_CACHE: dict[str, Any] = {}


def _llm_training_step_time(entry: dict[str, Any], constants: TimingConstants, calibration: Any = None) -> float:
    """A GPT decoder training step of the entry's sizes on its (multi)slice: weights FSDP-sharded
    over each slice (ZeRO-3), batch over every device, data parallel across slices, full remat."""
    if entry["id"] not in _LLM_CACHE:
        _LLM_CACHE[entry["id"]] = _llm_compile(entry)
    compiled = _LLM_CACHE[entry["id"]]
    return compiled.estimate(constants, calibration).time_s


def _llm_compile(entry: dict[str, Any]) -> Any:
    from tpusim.distribute import parse_system
    from tpusim.models.zoo import gpt_specs, gpt_train_step_shapes

    system = parse_system(entry["device"])
    devices = system.slice.devices * system.num_slices
    fn, args = gpt_train_step_shapes(layers=entry["layers"], d_model=entry["d_model"], heads=entry["heads"],
                                     head_dim=entry["head_dim"], d_ff=entry["d_ff"], vocab=entry["vocab"],
                                     seq=entry["seq"], batch=entry["per_device_batch"] * devices, remat=True)
    slices = entry.get("slices", 1)
    mesh = {"data": slices, "fsdp": entry["fsdp"]} if slices > 1 else {"fsdp": entry["fsdp"]}
    data_axes = ("data", "fsdp") if slices > 1 else "fsdp"
    return tpu_compile(fn, *args, device=entry["device"], mesh=mesh, check_memory=False,
                       in_specs=gpt_specs(args[0], data_axes=data_axes, model=None), donate_argnums=(0, 1))


def fit_mxu_efficiency(data: dict[str, Any] | None = None) -> dict[str, float]:
    """Per generation, the sustained MXU fraction that makes the LLM training steps marked
    `fit: mxu_efficiency` come out at their measured time (bisection; the step time falls as the
    fraction rises). For TPU v4, whose bf16 GEMMs no public table times, large training matmuls
    are the best evidence of it."""
    from dataclasses import replace as _replace

    from tpusim.sim.calibration import calibration_for

    data = data or load_measurements()
    out: dict[str, list[float]] = {}
    for e in data["measurements"]:
        if e.get("fit") != "mxu_efficiency" or e["kind"] != "llm_training_step":
            continue
        gen = _generation(e["device"])
        base = calibration_for(gen)
        lo, hi = 0.3, 1.0
        for _ in range(30):
            mid = (lo + hi) / 2
            t = _llm_training_step_time(e, DEFAULT_CONSTANTS, _replace(base, mxu_efficiency=mid))
            lo, hi = (mid, hi) if t > e["measured_s"] else (lo, mid)
        out.setdefault(gen, []).append((lo + hi) / 2)
    return {gen: round(sum(v) / len(v), 4) for gen, v in out.items()}


def _model_parts(entry: dict[str, Any], constants: TimingConstants) -> tuple[float, int]:
    """(device time with `constants`, number of MXU grid steps)."""
    if entry["kind"] == "training_step":
        return _training_step_time(entry, constants), 0
    if entry["kind"] == "llm_training_step":
        return _llm_training_step_time(entry, constants), 0
    if entry["kind"] != "matmul":
        return _collective_time(entry, constants), 0
    fn, args = _workload(entry)
    compiled = tpu_compile(fn, *args, device=entry["device"], tiles=tuple(entry["tiles"]) if "tiles" in entry else None)
    est = compiled.estimate(constants)
    steps = sum(math.prod(k.grid) for k in compiled.kernels if k.mxu is not None)
    return est.time_s, steps


def fit_constants(data: dict[str, Any] | None = None) -> TimingConstants:
    """Refit grid_step_s and host_dispatch_s on their stated subsets."""
    data = data or load_measurements()
    entries = data["measurements"]
    base = replace(DEFAULT_CONSTANTS, grid_step_s=0.0, host_dispatch_s=0.0, collective_fixed_s=0.0)
    coll = [e["measured_s"] - _collective_time(e, base) for e in entries if e.get("fit") == "collective_fixed_s"]
    base = replace(base, collective_fixed_s=sum(coll) / len(coll) if coll else DEFAULT_CONSTANTS.collective_fixed_s)
    step_fits = []
    for e in entries:
        if e.get("fit") == "grid_step_s":
            t, steps = _model_parts(e, base)
            step_fits.append((e["measured_s"] - t) / steps)
    grid_step = sum(step_fits) / len(step_fits) if step_fits else DEFAULT_CONSTANTS.grid_step_s
    with_steps = replace(base, grid_step_s=grid_step)
    disp_fits = []
    for e in entries:
        if e.get("fit") == "host_dispatch_s":
            t, _ = _model_parts(e, with_steps)
            disp_fits.append(e["measured_s"] - t)
    dispatch = sum(disp_fits) / len(disp_fits) if disp_fits else DEFAULT_CONSTANTS.host_dispatch_s
    return replace(with_steps, host_dispatch_s=dispatch)


def validate(constants: TimingConstants = DEFAULT_CONSTANTS) -> list[Check]:
    data = load_measurements()
    checks = []
    for e in data["measurements"]:
        t, _ = _model_parts(e, constants)
        if e.get("includes_dispatch"):
            t += constants.host_dispatch_s
        checks.append(Check(e["id"], e["device"], _describe(e), e["measured_s"], t, e.get("fit"), e["source"]))
    return checks
