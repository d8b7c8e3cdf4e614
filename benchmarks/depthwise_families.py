"""Mobile and modern CNN families on simulated TPUs: the estimated forward step, the share of it
spent in depthwise convolution kernels, the slowest such kernel against the slowest dense
convolution or matmul and against the dense work of its stage (the layers at its resolution),
and one SGD training step (a profile of these models shows dense 1x1 convs, not depthwise ones, on top).

Run: python benchmarks/depthwise_families.py [batch] [device ...]   (default: 8 v5e v4; ~4 min)
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import tpusim  # noqa: E402
from tpusim.compiler.tiling import is_depthwise  # noqa: E402


def _mix_ffn_block() -> keras.Model:
    """A SegFormer/MiT-B0 stage-1 Mix-FFN block (keras_hub's MiT backbone is not a dependency):
    overlapping patch embedding, then dense -> 3x3 depthwise conv -> GELU -> dense, and a
    classifier head so that it trains."""
    x = inp = keras.Input((224, 224, 3))
    x = keras.layers.Conv2D(32, 7, strides=4, padding="same")(x)
    x = keras.layers.LayerNormalization()(x)
    for _ in range(2):
        h = keras.layers.Dense(128)(x)
        h = keras.layers.DepthwiseConv2D(3, padding="same")(h)
        h = keras.layers.Activation("gelu")(h)
        x = x + keras.layers.Dense(32)(h)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(1000)(x))


SHAPE = (224, 224, 3)
FAMILIES = {
    "MobileNet": lambda: keras.applications.MobileNet(weights=None, input_shape=SHAPE),
    "MobileNetV2": lambda: keras.applications.MobileNetV2(weights=None, input_shape=SHAPE),
    "MobileNetV3Small": lambda: keras.applications.MobileNetV3Small(weights=None, input_shape=SHAPE),
    "MobileNetV3Large": lambda: keras.applications.MobileNetV3Large(weights=None, input_shape=SHAPE),
    "EfficientNetB0": lambda: keras.applications.EfficientNetB0(weights=None, input_shape=SHAPE),
    "EfficientNetV2B0": lambda: keras.applications.EfficientNetV2B0(weights=None, input_shape=SHAPE),
    "NASNetMobile": lambda: keras.applications.NASNetMobile(weights=None, input_shape=SHAPE),
    "Xception": lambda: keras.applications.Xception(weights=None, input_shape=SHAPE),
    "ConvNeXtTiny": lambda: keras.applications.ConvNeXtTiny(weights=None, input_shape=SHAPE),
    "MiT-B0 Mix-FFN": _mix_ffn_block,
}


def _resolution(kernel: object) -> int | None:
    shape = kernel.anchor.outputs[0].shape  # type: ignore[attr-defined]
    return shape[1] if len(shape) == 4 else None


def profile(model: keras.Model, batch: int, device: str) -> dict[str, float]:
    """Estimate one forward pass; split its time into depthwise convs and the rest, and find the
    depthwise kernel that is slowest next to the dense convs/matmuls of its stage (resolution)."""
    x = jax.ShapeDtypeStruct((batch, *model.input_shape[1:]), np.float32)
    compiled = tpusim.compile(model, x, device=device)
    est = compiled.estimate()
    times = {k.name: k.time_s for k in est.ops}
    mxu = [k for k in compiled.program.kernels if k.mxu is not None]
    dw = [k for k in mxu if is_depthwise(k.anchor)]
    dense = [k for k in mxu if not is_depthwise(k.anchor)]
    worst = 0.0
    for k in dw:
        stage = sum(times[d.name] for d in dense if _resolution(d) == _resolution(k))
        worst = max(worst, times[k.name] / stage if stage else float("inf"))
    return {"step_ms": est.time_s * 1e3, "dw_share": sum(times[k.name] for k in dw) / est.time_s,
            "max_dw_us": max((times[k.name] for k in dw), default=0.0) * 1e6,
            "max_dense_us": max((times[k.name] for k in dense), default=0.0) * 1e6, "worst_vs_stage": worst}


def train_step_ms(make, batch: int, device: str) -> str:
    """One SGD training step (forward, backward with the depthwise filter gradients, update)."""
    from tpusim.validation.memory_programs import _keras_train

    step = _keras_train("step", make, batch, "sgd")()
    try:
        compiled = tpusim.compile(step.fn, *step.args, device=device, donate_argnums=step.donate_argnums)
    except tpusim.TpusimError as e:  # an out-of-memory verdict or an unsupported op is a result
        return type(e).__name__
    return f"{compiled.estimate().time_s * 1e3:.2f}"


def main() -> None:
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    devices = sys.argv[2:] or ["v5e", "v4"]
    table = Table(title=f"batch {batch} at 224x224, float32 (default precision): forward pass, and an SGD training step")
    for col in ("model", "device", "step ms", "train step ms", "depthwise share", "slowest depthwise µs",
                "slowest dense conv/matmul µs", "worst depthwise / its stage's dense", "compile s"):
        table.add_column(col, justify="left" if col in ("model", "device") else "right")
    for name, make in FAMILIES.items():
        model = make()
        for device in devices:
            t = time.perf_counter()
            r = profile(model, batch, device)
            table.add_row(name, device, f"{r['step_ms']:.2f}", train_step_ms(make, batch, device), f"{r['dw_share']:.0%}", f"{r['max_dw_us']:.0f}",
                          f"{r['max_dense_us']:.0f}", f"{r['worst_vs_stage']:.2f}", f"{time.perf_counter() - t:.1f}")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
