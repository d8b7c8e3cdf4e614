"""Scaling curves: one model's training step estimated from one chip to a pod.

- "resnet50": Keras ResNet-50 training step (SGD), data parallel, a fixed batch per chip
  (weak scaling): throughput in images/s.
- "gpt": a GPT-style decoder (default 24 layers, d_model 2048: ~1.3B parameters) with 2D/3D
  sharding: 'model' (Megatron, up to 4 ways) x 'fsdp' (ZeRO-3) x 'data'; a fixed number of
  sequences per chip; throughput in tokens/s.
Each point is compiled for the real slice ("v4-16" for 8 chips, ...) and estimated, so the
communication comes from that slice's torus.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from tpusim.api import compile as tpu_compile
from tpusim.distribute.topology import _COUNTS_CORES, make_slice
from tpusim.errors import OutOfMemoryError, TpusimError
from tpusim.hardware.chip import resolve_device


@dataclass
class ScalePoint:
    chips: int
    system: str
    global_batch: int
    step_s: float
    throughput: float  # items per second (images or tokens)
    efficiency: float  # throughput per chip relative to one chip
    compute_s: float
    communication_s: float  # all collective time
    exposed_communication_s: float
    tflops_per_chip: float
    wall_s: float  # how long tpusim took for this point
    note: str = ""  # e.g. why a point is missing (does not fit HBM)


def slice_name(device: str, chips: int) -> str:
    chip = resolve_device(device)
    if chips == 1 and _devices(device, 1) == 1:
        return chip.name
    return f"{chip.name}-{chips * 2 if chip.name in _COUNTS_CORES else chips}"


def default_chip_counts(device: str) -> list[int]:
    """1, 8, 64, 512, 4096 chips as far as the generation's largest slice, and that slice."""
    chip = resolve_device(device)
    limit = int(chip.pod_max_chips.value) if chip.pod_max_chips else 1
    counts = [n for n in (1, 8, 64, 512, 4096) if n <= limit]
    return counts + ([limit] if limit not in counts else [])


def check_chip_counts(device: str, chips: list[int]) -> None:
    """Raise a SliceConfigError naming the problem for any count that is not a slice of
    `device` (before anything is compiled)."""
    for n in chips:
        if n > 1:
            make_slice(resolve_device(device).name, n)


def _devices(device: str, chips: int) -> int:
    """JAX devices in the slice: TPU v2/v3 and TPU7x expose each TensorCore (chiplet) as one."""
    return make_slice(resolve_device(device).name, chips).devices


def _resnet_point(device: str, chips: int, per_chip_batch: int, model: Any) -> tuple[Any, int, float]:
    from tpusim.keras.training import _named_train_step, _state

    batch = per_chip_batch * chips
    x = jax.ShapeDtypeStruct((batch, 224, 224, 3), jnp.float32)
    y = jax.ShapeDtypeStruct((batch,), jnp.int32)
    kw: dict[str, Any] = {}
    if _devices(device, chips) > 1:
        kw = {"mesh": {"data": _devices(device, chips)}, "in_specs": (None, P("data"))}
    c = tpu_compile(_named_train_step(model), _state(model), (x, y), device=slice_name(device, chips), **kw)
    return c, batch, float(batch)


def _gpt_point(device: str, chips: int, per_chip_batch: int, cfg: dict[str, int]) -> tuple[Any, int, float]:
    from tpusim.models.zoo import gpt_specs, gpt_train_step_shapes

    batch = per_chip_batch * chips
    fn, args = gpt_train_step_shapes(batch=batch, **cfg)
    kw: dict[str, Any] = {}
    devices = _devices(device, chips)
    if devices > 1:
        model = math.gcd(devices, 4, cfg["heads"])
        kw = {"mesh": {"fsdp": devices // model, "model": model}, "in_specs": gpt_specs(args[0], data_axes="fsdp")}
    c = tpu_compile(fn, *args, device=slice_name(device, chips), **kw)
    return c, batch, float(batch * cfg["seq"])


GPT_DEFAULT = {"layers": 24, "d_model": 2048, "heads": 16, "seq": 1024, "vocab": 50304}


def _missing(chips: int, device: str, per_chip_batch: int, started: float, why: str) -> ScalePoint:
    nan = float("nan")
    return ScalePoint(chips, slice_name(device, chips), per_chip_batch * chips, nan, nan, nan, nan, nan, nan, nan,
                      time.perf_counter() - started, why)


def scaling_curve(model: str, device: str, chips: list[int], per_chip_batch: int | None = None,
                  gpt_config: dict[str, int] | None = None) -> list[ScalePoint]:
    if model not in ("resnet50", "gpt"):
        raise TpusimError(f"unknown model '{model}' for scaling: use 'resnet50' or 'gpt'")
    check_chip_counts(device, chips)
    keras_model = None
    if model == "resnet50":
        from tpusim.models import resnet50

        keras_model = resnet50()
        keras_model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        keras_model.optimizer.build(keras_model.trainable_variables)
        per_chip_batch = per_chip_batch or 64
    else:
        per_chip_batch = per_chip_batch or 4
    cfg = dict(GPT_DEFAULT, **(gpt_config or {}))
    points: list[ScalePoint] = []
    base = None
    for n in chips:
        t = time.perf_counter()
        try:
            if model == "resnet50":
                c, batch, items = _resnet_point(device, n, per_chip_batch, keras_model)
            else:
                c, batch, items = _gpt_point(device, n, per_chip_batch, cfg)
        except OutOfMemoryError as e:
            points.append(_missing(n, device, per_chip_batch, t, f"does not fit: needs {e.peak_bytes / 2**30:.1f} GiB per device"))
            continue
        except TpusimError as e:  # keep the rows already computed; say why this one is missing
            points.append(_missing(n, device, per_chip_batch, t, f"failed: {e}"))
            continue
        est = c.estimate()
        wall = time.perf_counter() - t
        throughput = items / est.time_s
        if base is None:
            base = throughput / n
        points.append(ScalePoint(n, slice_name(device, n), batch, est.time_s, throughput, throughput / (n * base),
                                 est.compute_s, est.communication_s, est.exposed_communication_s,
                                 est.tflops * _devices(device, n) / n, wall))
    return points


def plot_scaling(points: list[ScalePoint], path: str, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in points if not p.note]
    chips = [p.chips for p in points]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.5))
    a.loglog(chips, [p.throughput for p in points], "o-", label="tpusim estimate")
    a.loglog(chips, [points[0].throughput / points[0].chips * c for c in chips], "k--", lw=1, label="linear scaling")
    a.set_xlabel("chips")
    a.set_ylabel("throughput (items/s)")
    a.legend()
    a.grid(True, which="both", alpha=0.3)
    idx = range(len(points))
    b.bar(idx, [p.compute_s * 1e3 for p in points], label="compute")
    b.bar(idx, [p.exposed_communication_s * 1e3 for p in points], bottom=[p.compute_s * 1e3 for p in points],
          label="exposed communication")
    b.set_xticks(list(idx), [str(c) for c in chips])
    b.set_xlabel("chips")
    b.set_ylabel("step time (ms)")
    b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
