"""The JAX workloads timed on a lent GPU (benchmarks/gpu_measure.py) and re-estimated by
`tpusim validate`: one definition, so the measured program and the estimated one are the same.

Each workload is a hashable tuple `(kind, *sizes, dtype)`; `build` turns it into a function and
its argument shapes. Only JAX and tpusim.models are imported, so the measuring script runs
where tpusim's own dependencies are not installed.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Spec = tuple


def _s(shape: tuple[int, ...], dtype: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.dtype(dtype))


def _gemm(m: int, n: int, k: int, dtype: str) -> tuple[Callable, list]:
    if dtype == "float32_highest":
        return (lambda a, b: jnp.matmul(a, b, precision="highest")), [_s((m, k), "float32"), _s((k, n), "float32")]
    if dtype.startswith("float8"):
        # fp8 operands, bf16 result: how an fp8 GEMM is written in JAX (cuBLASLt's fp8 kernel).
        return (lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.bfloat16)), [_s((m, k), dtype), _s((k, n), dtype)]
    return (lambda a, b: jnp.matmul(a, b)), [_s((m, k), dtype), _s((k, n), dtype)]


def _layer_norm(x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = ((x32 - mean) ** 2).mean(-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + 1e-5)).astype(x.dtype)


_VECTOR: dict[str, Callable] = {
    "add": lambda x, y: x + y,
    "scale_shift": lambda x: x * 1.5 + 0.5,
    "gelu": jax.nn.gelu,
    "bias_gelu_residual": lambda x, y: jax.nn.gelu(x + 0.1) + y,  # one loop fusion, two reads
    "cast_f32_bf16": lambda x: x.astype(jnp.bfloat16),
    "layer_norm": _layer_norm,
    "rms_norm": lambda x: (x.astype(jnp.float32) * jax.lax.rsqrt(
        (x.astype(jnp.float32) ** 2).mean(-1, keepdims=True) + 1e-6)).astype(x.dtype),
    "softmax": lambda x: jax.nn.softmax(x.astype(jnp.float32), axis=-1).astype(x.dtype),
    "row_sum": lambda x: x.astype(jnp.float32).sum(-1),
}
_TWO_INPUTS = {"add", "bias_gelu_residual"}


def _attention(impl: str, b: int, t: int, h: int, d: int, causal: bool, grad: bool,
               traceable: bool = False) -> tuple[Callable, list]:
    def plain(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        s = jnp.einsum("bthd,bshd->bhts", q, k).astype(jnp.float32) / np.sqrt(d)
        if causal:
            s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -1e9)
        return jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(s, axis=-1).astype(q.dtype), v)

    def library(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        # cuDNN's kernel is a custom call that traces only where cuDNN is: elsewhere the same
        # attention in XLA's formulation, which `compile_options` prices as the fused kernel.
        chosen = "xla" if traceable and impl == "cudnn" else impl
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation=chosen)

    fwd = plain if impl == "plain" else library
    fn = (lambda q, k, v: jax.grad(lambda q, k, v: fwd(q, k, v).astype(jnp.float32).sum(), (0, 1, 2))(q, k, v)
          ) if grad else fwd
    return fn, [_s((b, t, h, d), "bfloat16")] * 3


def _conv(n: int, hw: int, cin: int, cout: int, kernel: int, stride: int, dtype: str) -> tuple[Callable, list]:
    def conv(x: jax.Array, w: jax.Array) -> jax.Array:
        return jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return conv, [_s((n, hw, hw, cin), dtype), _s((kernel, kernel, cin, cout), dtype)]


def _mlp_train(batch: int, width: int, depth: int, dtype: str) -> tuple[Callable, list]:
    """`depth` dense layers with ReLU, mean-square loss, SGD: the plain-JAX MLP step."""
    def loss(ws: list[jax.Array], x: jax.Array) -> jax.Array:
        for w in ws:
            x = jax.nn.relu(x @ w)
        return (x.astype(jnp.float32) ** 2).mean()

    def step(ws: list[jax.Array], x: jax.Array) -> list[jax.Array]:
        g = jax.grad(loss)(ws, x)
        return [w - 0.01 * gw for w, gw in zip(ws, g)]
    return step, [[_s((width, width), dtype) for _ in range(depth)], _s((batch, width), dtype)]


def _resnet50_train(batch: int, image: int) -> tuple[Callable, list]:
    """ResNet-50 v1.5 (bottlenecks 3-4-6-3, stride on the 3x3), NHWC, bf16 compute on f32
    weights, batch-norm with batch statistics, softmax cross-entropy, SGD with momentum: the
    mixed-precision training step of the MLPerf reference, written in plain JAX."""
    params: dict[str, Any] = {}

    def conv_p(name: str, k: int, cin: int, cout: int) -> None:
        params[name] = {"w": _s((k, k, cin, cout), "float32"), "g": _s((cout,), "float32"), "b": _s((cout,), "float32")}

    conv_p("stem", 7, 3, 64)
    blocks = []
    cin = 64
    for stage, (n, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        for i in range(n):
            name, stride = f"s{stage}b{i}", (2 if i == 0 and stage > 0 else 1)
            conv_p(name + "a", 1, cin, width)
            conv_p(name + "b", 3, width, width)
            conv_p(name + "c", 1, width, 4 * width)
            if i == 0:
                conv_p(name + "p", 1, cin, 4 * width)
            blocks.append((name, stride, i == 0))
            cin = 4 * width
    params["fc"] = {"w": _s((2048, 1000), "float32"), "b": _s((1000,), "float32")}

    def cbn(p: dict[str, jax.Array], x: jax.Array, stride: int, relu: bool) -> jax.Array:
        y = jax.lax.conv_general_dilated(x, p["w"].astype(jnp.bfloat16), (stride, stride), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y32 = y.astype(jnp.float32)
        mean = y32.mean((0, 1, 2))
        var = ((y32 - mean) ** 2).mean((0, 1, 2))
        y = ((y32 - mean) * jax.lax.rsqrt(var + 1e-5) * p["g"] + p["b"]).astype(jnp.bfloat16)
        return jax.nn.relu(y) if relu else y

    def loss(params: dict[str, Any], x: jax.Array, labels: jax.Array) -> jax.Array:
        x = cbn(params["stem"], x.astype(jnp.bfloat16), 2, True)
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "SAME")
        for name, stride, project in blocks:
            y = cbn(params[name + "a"], x, 1, True)
            y = cbn(params[name + "b"], y, stride, True)
            y = cbn(params[name + "c"], y, 1, False)
            short = cbn(params[name + "p"], x, stride, False) if project else x
            x = jax.nn.relu(y + short)
        x = x.astype(jnp.float32).mean((1, 2))
        logits = x @ params["fc"]["w"] + params["fc"]["b"]
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1).mean()

    def step(params: dict[str, Any], velocity: dict[str, Any], x: jax.Array, labels: jax.Array) -> tuple[Any, Any]:
        g = jax.grad(loss)(params, x, labels)
        velocity = jax.tree.map(lambda v, g: 0.9 * v + g, velocity, g)
        return jax.tree.map(lambda p, v: p - 0.1 * v, params, velocity), velocity

    return step, [params, params, _s((batch, image, image, 3), "float32"), _s((batch,), "int32")]


def build(spec: Spec, traceable: bool = False) -> tuple[Callable, list]:
    """(function, argument ShapeDtypeStructs) of one workload; `traceable`: as tpusim traces it
    on a machine without the GPU's libraries (see `compile_options`)."""
    kind = spec[0]
    if kind == "gemm":
        return _gemm(*spec[1:])
    if kind == "bmm":
        _, b, m, n, k, dtype = spec
        return (lambda x, y: jnp.matmul(x, y)), [_s((b, m, k), dtype), _s((b, k, n), dtype)]
    if kind in _VECTOR:
        _, shape, dtype = spec
        return _VECTOR[kind], [_s(shape, dtype)] * (2 if kind in _TWO_INPUTS else 1)
    if kind == "attention":
        return _attention(*spec[1:], traceable=traceable)
    if kind == "conv":
        return _conv(*spec[1:])
    if kind == "mlp_train":
        return _mlp_train(*spec[1:])
    if kind == "resnet50_train":
        return _resnet50_train(*spec[1:])
    if kind == "gpt_train":
        from tpusim.models.zoo import gpt_train_step_shapes

        _, layers, d_model, heads, seq, batch, vocab = spec
        fn, args = gpt_train_step_shapes(layers=layers, d_model=d_model, heads=heads, seq=seq, batch=batch, vocab=vocab)
        return fn, list(args)
    raise ValueError(f"no GPU workload of kind {kind!r}")


def compile_options(spec: Spec) -> dict[str, Any]:
    """tpusim.compile options that say what the GPU ran: cuDNN's attention is one fused flash
    kernel (scores never in HBM); everything else as XLA:GPU compiles it (tpusim's defaults)."""
    return {"attention": "flash"} if spec[0] == "attention" and spec[1] == "cudnn" else {}


def family(spec: Spec) -> str:
    """The validation family a workload reports under (chip name prefixed by the caller)."""
    kind = spec[0]
    if kind in ("gemm", "bmm"):
        dtype = spec[-1]
        return "GEMM " + {"bfloat16": "bf16", "float16": "f16", "float32": "f32 (tf32)", "float32_highest": "f32 highest",
                          "float8_e4m3fn": "fp8"}.get(dtype, dtype)
    if kind in ("layer_norm", "rms_norm", "softmax", "row_sum"):
        return "reduction"
    if kind in _VECTOR:
        return "elementwise"
    if kind == "attention":
        return "attention " + ("plain JAX" if spec[1] == "plain" else spec[1])
    if kind == "conv":
        return "conv"
    return "training step"


def workloads() -> list[Spec]:
    """Every workload the GPU sweep times, smallest families first."""
    out: list[Spec] = []
    squares = (256, 512, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384)
    llm = [(m, n, k) for m in (4096, 16384) for (k, n) in ((4096, 4096), (4096, 14336), (14336, 4096),
                                                            (2048, 8192), (8192, 2048), (4096, 32000))]
    skinny = [(m, n, k) for m in (1, 16, 64, 256) for (k, n) in ((8192, 8192), (4096, 14336))]
    for dtype in ("bfloat16", "float16", "float32", "float32_highest", "float8_e4m3fn"):
        sizes = [(s, s, s) for s in squares] + llm + skinny
        if dtype == "float32_highest":
            sizes = [(s, s, s) for s in squares if s <= 8192] + llm[:6]
        out += [("gemm", m, n, k, dtype) for m, n, k in sizes]
    out += [("bmm", b, m, m, m, "bfloat16") for b in (4, 16, 64) for m in (256, 512, 1024)]
    for n in (2**16, 2**18, 2**20, 2**22, 2**24, 2**26, 2**28):
        for dtype in ("bfloat16", "float32"):
            out += [(op, (n,), dtype) for op in ("add", "scale_shift", "gelu", "bias_gelu_residual")]
        out.append(("cast_f32_bf16", (n,), "float32"))
    for rows, cols in ((4096, 1024), (16384, 4096), (65536, 4096), (8192, 32000), (512, 128256), (262144, 256)):
        for op in ("layer_norm", "rms_norm", "softmax", "row_sum"):
            out.append((op, (rows, cols), "bfloat16"))
    for impl in ("plain", "xla", "cudnn"):
        for b, t in ((16, 512), (8, 1024), (4, 2048), (2, 4096), (1, 8192)):
            for causal in (False, True):
                out.append(("attention", impl, b, t, 16, 128, causal, False))
        out += [("attention", impl, b, t, 16, 128, True, True) for b, t in ((8, 1024), (2, 4096))]
    # ResNet-50's convolutions at batch 128 (bf16), and the stem in f32.
    for hw, cin, cout, k, s in ((224, 3, 64, 7, 2), (56, 64, 64, 1, 1), (56, 64, 64, 3, 1), (56, 64, 256, 1, 1),
                                (56, 256, 64, 1, 1), (28, 128, 128, 3, 1), (28, 512, 128, 1, 1), (14, 256, 256, 3, 1),
                                (14, 1024, 256, 1, 1), (7, 512, 512, 3, 1), (7, 2048, 512, 1, 1), (56, 128, 128, 3, 2)):
        out.append(("conv", 128, hw, cin, cout, k, s, "bfloat16"))
    out.append(("conv", 128, 224, 3, 64, 7, 2, "float32"))
    out += [("mlp_train", 4096, 4096, 4, "bfloat16"), ("mlp_train", 16384, 8192, 4, "bfloat16"),
            ("mlp_train", 4096, 4096, 4, "float32")]
    out += [("resnet50_train", 64, 224), ("resnet50_train", 128, 224), ("resnet50_train", 256, 224)]
    out += [("gpt_train", 12, 768, 12, 1024, 8, 50304), ("gpt_train", 24, 1024, 16, 1024, 8, 50304),
            ("gpt_train", 16, 2048, 16, 2048, 4, 50304)]
    return out
