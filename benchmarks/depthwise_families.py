"""Mobile and modern CNN families on simulated TPUs: the estimated forward step, the share of it
spent in depthwise/grouped convolution kernels, the slowest such kernel against the slowest
dense convolution or matmul, and one SGD training step (a profile of these models shows dense 1x1 convs, not depthwise ones, on top).

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


def _is_grouped(kernel: object) -> bool:
    anchor = kernel.op.params.get("anchor") if kernel.op is not None and kernel.op.prim == "fusion" else None  # type: ignore[attr-defined]
    return anchor is not None and anchor.prim == "conv_general_dilated" and (
        int(anchor.params["feature_group_count"]) > 1 or int(anchor.params["batch_group_count"]) > 1)


def profile(model: keras.Model, batch: int, device: str) -> dict[str, float]:
    """Estimate one forward pass; split its time into grouped/depthwise convs and the rest."""
    x = jax.ShapeDtypeStruct((batch, *model.input_shape[1:]), np.float32)
    compiled = tpusim.compile(model, x, device=device)
    est = compiled.estimate()
    times = {k.name: k.time_s for k in est.ops}
    grouped = [k for k in compiled.program.kernels if _is_grouped(k)]
    dense = [k for k in compiled.program.kernels if k.kind in ("conv", "matmul") and not _is_grouped(k)]
    dw_s = sum(times.get(k.name, 0.0) for k in grouped)
    return {"step_ms": est.time_s * 1e3, "dw_share": dw_s / est.time_s if est.time_s else 0.0,
            "max_dw_us": max((times.get(k.name, 0.0) for k in grouped), default=0.0) * 1e6,
            "max_dense_us": max((times.get(k.name, 0.0) for k in dense), default=0.0) * 1e6}


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
    for col in ("model", "device", "step ms", "train step ms", "depthwise share", "slowest depthwise µs", "slowest dense conv/matmul µs", "compile s"):
        table.add_column(col, justify="left" if col in ("model", "device") else "right")
    for name, make in FAMILIES.items():
        model = make()
        for device in devices:
            t = time.perf_counter()
            r = profile(model, batch, device)
            table.add_row(name, device, f"{r['step_ms']:.2f}", train_step_ms(make, batch, device), f"{r['dw_share']:.0%}", f"{r['max_dw_us']:.0f}",
                          f"{r['max_dense_us']:.0f}", f"{time.perf_counter() - t:.1f}")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
