"""Building blocks of decoder LMs as people write them in plain JAX (Llama/Mistral style):
RMSNorm, causal grouped-query attention, SwiGLU, the LM loss and Adam written out."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def rms_norm(x: jax.Array, g: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt((x32 * x32).mean(-1, keepdims=True) + 1e-6)).astype(x.dtype) * g


def gqa_attention(x: jax.Array, p: dict[str, jax.Array], heads: int, kv_heads: int) -> jax.Array:
    """Causal grouped-query attention (Llama/Mistral), written as plain JAX."""
    B, T, _ = x.shape
    hd = p["wq"].shape[-1] // heads
    q = (x @ p["wq"]).reshape(B, T, kv_heads, heads // kv_heads, hd)
    k = (x @ p["wk"]).reshape(B, T, kv_heads, hd)
    v = (x @ p["wv"]).reshape(B, T, kv_heads, hd)
    s = jnp.einsum("btkgd,bskd->bkgts", q, k).astype(jnp.float32) / np.sqrt(hd)
    s = jnp.where(jnp.tril(jnp.ones((T, T), bool)), s, -1e9)
    a = jax.nn.softmax(s, axis=-1).astype(x.dtype)
    return jnp.einsum("bkgts,bskd->btkgd", a, v).reshape(B, T, heads * hd) @ p["wo"]


def adam(params: Any, opt: dict[str, Any], grads: Any) -> tuple[Any, dict[str, Any]]:
    m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, opt["m"], grads)
    v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, opt["v"], grads)
    new = jax.tree.map(lambda p, m, v: p - 1e-4 * m / (jnp.sqrt(v) + 1e-8), params, m, v)
    return new, {"m": m, "v": v}


def lm_loss(x: jax.Array, params: dict[str, Any], tokens: jax.Array) -> jax.Array:
    logits = (rms_norm(x, params["ln_f"]) @ params["embed"].T).astype(jnp.float32)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., 1:, None], axis=-1).mean()


def swiglu(x: jax.Array, w1: jax.Array, w3: jax.Array, w2: jax.Array) -> jax.Array:
    return (jax.nn.silu(x @ w1) * (x @ w3)) @ w2
