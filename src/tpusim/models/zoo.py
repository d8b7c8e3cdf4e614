"""Model builders used by the demo, tests and benchmarks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _keras() -> Any:
    import keras

    return keras


def classic_cnn(input_shape: tuple[int, int, int] = (28, 28, 1), classes: int = 10, seed: int = 0) -> Any:
    """Conv2D 32/64/64 + MaxPooling2D + Flatten + Dense 64 + Dense softmax (the MNIST CNN)."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    L = keras.layers
    return keras.Sequential([
        keras.Input(input_shape),
        L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(),
        L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(),
        L.Conv2D(64, 3, activation="relu"),
        L.Flatten(), L.Dense(64, activation="relu"), L.Dense(classes, activation="softmax"),
    ], name="classic_cnn")


def lstm_text_model(vocab: int = 1000, length: int = 20, units: int = 128, seed: int = 0) -> Any:
    """Embedding(1000,128) + LSTM(128) + Dense(1000, softmax): next-word prediction."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    L = keras.layers
    return keras.Sequential([
        keras.Input((length,), dtype="int32"),
        L.Embedding(vocab, 128), L.LSTM(units), L.Dense(vocab, activation="softmax"),
    ], name="lstm_text")


def vgg16_transfer(input_shape: tuple[int, int, int] = (224, 224, 3), classes: int = 10, seed: int = 0,
                   freeze_base: bool = True) -> Any:
    """VGG16(weights=None, include_top=False) + Flatten + Dense(256) + Dense(classes)."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=input_shape)
    base.trainable = not freeze_base
    L = keras.layers
    return keras.Sequential([base, L.Flatten(), L.Dense(256, activation="relu"),
                             L.Dense(classes, activation="softmax")], name="vgg16_transfer")


def resnet50(input_shape: tuple[int, int, int] = (224, 224, 3), seed: int = 0) -> Any:
    keras = _keras()
    keras.utils.set_random_seed(seed)
    return keras.applications.ResNet50(weights=None, input_shape=input_shape)


def transformer_block_params(d_model: int = 256, heads: int = 4, d_ff: int = 1024, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.normal(size=shape) / np.sqrt(shape[0])).astype(np.float32)

    return {
        "wq": w(d_model, d_model), "wk": w(d_model, d_model), "wv": w(d_model, d_model), "wo": w(d_model, d_model),
        "w1": w(d_model, d_ff), "b1": np.zeros(d_ff, np.float32), "w2": w(d_ff, d_model), "b2": np.zeros(d_model, np.float32),
        "ln1_g": np.ones(d_model, np.float32), "ln1_b": np.zeros(d_model, np.float32),
        "ln2_g": np.ones(d_model, np.float32), "ln2_b": np.zeros(d_model, np.float32),
        "heads": np.asarray(heads),
    }


def _layer_norm(x: jax.Array, g: jax.Array, b: jax.Array, eps: float = 1e-5) -> jax.Array:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps) * g + b


def transformer_block(params: dict[str, Any], x: jax.Array, mask: jax.Array, heads: int = 4) -> jax.Array:
    """Pre-LN transformer block in plain JAX: masked multi-head attention + GELU MLP."""
    B, T, D = x.shape
    hd = D // heads
    h = _layer_norm(x, params["ln1_g"], params["ln1_b"])
    q = (h @ params["wq"]).reshape(B, T, heads, hd)
    k = (h @ params["wk"]).reshape(B, T, heads, hd)
    v = (h @ params["wv"]).reshape(B, T, heads, hd)
    scores = jnp.einsum("bthd,bshd->bhts", q, k) / jnp.sqrt(hd).astype(x.dtype)
    scores = jnp.where(mask[:, None, :, :], scores, jnp.finfo(x.dtype).min)
    attn = jax.nn.softmax(scores, axis=-1)
    ctx = jnp.einsum("bhts,bshd->bthd", attn, v).reshape(B, T, D)
    x = x + ctx @ params["wo"]
    h = _layer_norm(x, params["ln2_g"], params["ln2_b"])
    h = jax.nn.gelu(h @ params["w1"] + params["b1"])
    return x + h @ params["w2"] + params["b2"]


def bert_base_shapes(batch: int = 8, seq: int = 128, layers: int = 12, d_model: int = 768, heads: int = 12,
                     d_ff: int = 3072, vocab: int = 30522) -> tuple[Any, tuple[Any, ...]]:
    """A BERT-base-shaped encoder forward pass as (fn, example args); args are ShapeDtypeStructs,
    so compiling and estimating it needs no weights."""
    f32 = jnp.float32

    def spec(*shape: int, dtype: Any = f32) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype)

    layer = {"wq": spec(d_model, d_model), "wk": spec(d_model, d_model), "wv": spec(d_model, d_model),
             "wo": spec(d_model, d_model), "w1": spec(d_model, d_ff), "b1": spec(d_ff), "w2": spec(d_ff, d_model),
             "b2": spec(d_model), "ln1_g": spec(d_model), "ln1_b": spec(d_model), "ln2_g": spec(d_model),
             "ln2_b": spec(d_model)}
    params = {"embed": spec(vocab, d_model), "pos": spec(seq, d_model), "layers": [dict(layer) for _ in range(layers)]}

    def bert(params: dict[str, Any], tokens: jax.Array, mask: jax.Array) -> jax.Array:
        x = params["embed"][tokens] + params["pos"][None]
        attn_mask = mask[:, None, :] & mask[:, :, None]
        for lp in params["layers"]:
            x = transformer_block(lp, x, attn_mask, heads)
        return x

    return bert, (params, spec(batch, seq, dtype=jnp.int32), spec(batch, seq, dtype=jnp.bool_))


def gpt_train_step_shapes(layers: int = 12, d_model: int = 768, heads: int = 12, seq: int = 1024, batch: int = 8,
                          vocab: int = 50304, d_ff: int | None = None, dtype: Any = jnp.bfloat16,
                          remat: bool = True, head_dim: int | None = None,
                          activation_axes: Any = None) -> tuple[Any, tuple[Any, ...]]:
    """A GPT-style decoder training step (causal attention, GELU MLP, layers under one
    `lax.scan`, Adam written out) as (fn, example args as ShapeDtypeStructs): nothing is
    allocated, so GPT-3-sized models compile and estimate on a laptop. `remat` recomputes each
    layer in the backward pass (jax.checkpoint), as large-model training does. `head_dim` sets
    the attention width (heads x head_dim) apart from d_model, as MaxText's configs do.
    `activation_axes` pins the activations' batch split at every layer boundary
    (with_sharding_constraint, as MaxText does), so XLA keeps FSDP's data parallelism instead of
    replicating the batch."""
    d_ff = d_ff or 4 * d_model
    attn = heads * (head_dim or d_model // heads)

    def spec(*shape: int) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype)

    params = {
        "embed": spec(vocab, d_model),
        "layers": {"wq": spec(layers, d_model, attn), "wk": spec(layers, d_model, attn),
                   "wv": spec(layers, d_model, attn), "wo": spec(layers, attn, d_model),
                   "w1": spec(layers, d_model, d_ff), "w2": spec(layers, d_ff, d_model),
                   "ln1": spec(layers, d_model), "ln2": spec(layers, d_model)},
        "ln_f": spec(d_model),
    }
    opt = {"m": params, "v": params}
    tokens = jax.ShapeDtypeStruct((batch, seq + 1), jnp.int32)

    def norm(x: jax.Array, g: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        return (x32 * jax.lax.rsqrt((x32 * x32).mean(-1, keepdims=True) + 1e-6)).astype(x.dtype) * g

    def pin(x: jax.Array) -> jax.Array:
        if activation_axes is None:
            return x
        return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(activation_axes))

    def layer(x: jax.Array, p: dict[str, jax.Array]) -> tuple[jax.Array, None]:
        x = pin(x)
        B, T, D = x.shape
        hd = attn // heads
        h = norm(x, p["ln1"])
        q, k, v = ((h @ p[w]).reshape(B, T, heads, hd) for w in ("wq", "wk", "wv"))
        s = jnp.einsum("bthd,bshd->bhts", q, k).astype(jnp.float32) / np.sqrt(hd)
        s = jnp.where(jnp.tril(jnp.ones((T, T), bool)), s, -1e9)
        a = jax.nn.softmax(s, axis=-1).astype(x.dtype)
        x = x + jnp.einsum("bhts,bshd->bthd", a, v).reshape(B, T, attn) @ p["wo"]
        h = norm(x, p["ln2"])
        return pin(x + jax.nn.gelu(h @ p["w1"]) @ p["w2"]), None

    def loss_fn(params: dict[str, Any], tokens: jax.Array) -> jax.Array:
        x = pin(params["embed"][tokens[:, :-1]])
        x, _ = jax.lax.scan(jax.checkpoint(layer) if remat else layer, x, params["layers"])
        logits = (norm(x, params["ln_f"]) @ params["embed"].T).astype(jnp.float32)
        logp = jax.nn.log_softmax(logits)
        return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1).mean()

    def train_step(params: dict[str, Any], opt: dict[str, Any], tokens: jax.Array) -> tuple[Any, Any, jax.Array]:
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, opt["m"], grads)
        v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, opt["v"], grads)
        new = jax.tree.map(lambda p, m, v: p - 1e-4 * m / (jnp.sqrt(v) + 1e-8), params, m, v)
        return new, {"m": m, "v": v}, loss

    return train_step, (params, opt, tokens)


def gpt_specs(params: Any, data_axes: Any = ("data", "fsdp"), fsdp: str | None = "fsdp", model: str | None = "model") -> Any:
    """3D sharding of the GPT step: weights split over `fsdp` (ZeRO-3) and `model` (Megatron:
    column-parallel q/k/v/w1, row-parallel wo/w2), tokens over the data axes."""
    from jax.sharding import PartitionSpec as P

    col = P(None, fsdp, model)
    row = P(None, model, fsdp)
    layer = {"wq": col, "wk": col, "wv": col, "w1": col, "wo": row, "w2": row, "ln1": None, "ln2": None}
    p = {"embed": P(model, fsdp), "layers": layer, "ln_f": None}
    return p, {"m": p, "v": p}, P(data_axes)


def transformer_example(batch: int = 2, seq: int = 32, d_model: int = 128, heads: int = 4, d_ff: int = 512,
                        seed: int = 0) -> tuple[Any, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(fn, params, x, causal mask) for the plain-JAX transformer block, with random data."""
    params = transformer_block_params(d_model=d_model, heads=heads, d_ff=d_ff, seed=seed)
    params.pop("heads")
    x = np.random.default_rng(seed).normal(size=(batch, seq, d_model)).astype(np.float32)
    mask = np.tril(np.ones((seq, seq), bool))[None].repeat(batch, 0)

    def fn(p: dict[str, Any], x: jax.Array, m: jax.Array) -> jax.Array:
        return transformer_block(p, x, m, heads)

    return fn, params, x, mask


def llama_train_step_shapes(layers: int = 16, d_model: int = 2048, heads: int = 32, kv_heads: int = 8,
                            d_ff: int = 8192, vocab: int = 128256, seq: int = 2048, batch: int = 8,
                            dtype: Any = jnp.bfloat16) -> tuple[Any, tuple[Any, ...]]:
    """A Llama-shaped decoder training step (RMSNorm, grouped-query causal attention, SwiGLU,
    layers under one remat'd scan, Adam; defaults: Llama-3.2-1B's sizes) as (fn, example args as
    ShapeDtypeStructs)."""
    from tpusim.models.blocks import adam, gqa_attention, lm_loss, rms_norm, swiglu

    def spec(*shape: int) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype)

    hd = d_model // heads
    params = {"embed": spec(vocab, d_model), "ln_f": spec(d_model),
              "layers": {"wq": spec(layers, d_model, heads * hd), "wk": spec(layers, d_model, kv_heads * hd),
                         "wv": spec(layers, d_model, kv_heads * hd), "wo": spec(layers, heads * hd, d_model),
                         "w1": spec(layers, d_model, d_ff), "w3": spec(layers, d_model, d_ff),
                         "w2": spec(layers, d_ff, d_model), "ln1": spec(layers, d_model), "ln2": spec(layers, d_model)}}
    tokens = jax.ShapeDtypeStruct((batch, seq + 1), jnp.int32)

    def layer(x: jax.Array, p: dict[str, jax.Array]) -> tuple[jax.Array, None]:
        x = x + gqa_attention(rms_norm(x, p["ln1"]), p, heads, kv_heads)
        return x + swiglu(rms_norm(x, p["ln2"]), p["w1"], p["w3"], p["w2"]), None

    def loss_fn(params: dict[str, Any], tokens: jax.Array) -> jax.Array:
        x, _ = jax.lax.scan(jax.checkpoint(layer), params["embed"][tokens[:, :-1]], params["layers"])
        return lm_loss(x, params, tokens)

    def train_step(params: dict[str, Any], opt: dict[str, Any], tokens: jax.Array) -> tuple[Any, Any, jax.Array]:
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        return (*adam(params, opt, grads), loss)

    return train_step, (params, {"m": params, "v": params}, tokens)
