"""A Llama-shaped decoder for serving: prefill (the prompt, filling the KV cache) and one
decode step (one token per sequence, attending to the cache), as static-shape JAX functions the
way JAX serving stacks write them (a fixed-size cache updated in place, a position mask).
Weights and caches are ShapeDtypeStructs, so 8B-70B models estimate without memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from tpusim.models.blocks import rms_norm, swiglu


@dataclass(frozen=True)
class LlamaConfig:
    layers: int = 32
    d_model: int = 4096
    heads: int = 32
    kv_heads: int = 8
    d_ff: int = 14336
    vocab: int = 128256

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    @property
    def params(self) -> int:
        c, hd = self, self.head_dim
        per_layer = c.d_model * hd * (2 * c.heads + 2 * c.kv_heads) + 3 * c.d_model * c.d_ff + 2 * c.d_model
        return c.layers * per_layer + c.vocab * c.d_model + c.d_model


LLAMA3_8B = LlamaConfig()
LLAMA3_70B = LlamaConfig(layers=80, d_model=8192, heads=64, kv_heads=8, d_ff=28672)
LLAMA32_1B = LlamaConfig(layers=16, d_model=2048, heads=32, kv_heads=8, d_ff=8192)
CONFIGS = {"llama3-8b": LLAMA3_8B, "llama3-70b": LLAMA3_70B, "llama3.2-1b": LLAMA32_1B}


def param_shapes(cfg: LlamaConfig, dtype: Any = jnp.bfloat16) -> dict[str, Any]:
    def s(*shape: int) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype)

    L, D, hd = cfg.layers, cfg.d_model, cfg.head_dim
    return {"embed": s(cfg.vocab, D), "ln_f": s(D),
            "layers": {"wq": s(L, D, cfg.heads * hd), "wk": s(L, D, cfg.kv_heads * hd), "wv": s(L, D, cfg.kv_heads * hd),
                       "wo": s(L, cfg.heads * hd, D), "w1": s(L, D, cfg.d_ff), "w3": s(L, D, cfg.d_ff),
                       "w2": s(L, cfg.d_ff, D), "ln1": s(L, D), "ln2": s(L, D)}}


def cache_shape(cfg: LlamaConfig, batch: int, max_len: int, dtype: Any = jnp.bfloat16) -> jax.ShapeDtypeStruct:
    """Keys (or values) of every layer: [layers, batch, max_len, kv_heads, head_dim]."""
    return jax.ShapeDtypeStruct((cfg.layers, batch, max_len, cfg.kv_heads, cfg.head_dim), dtype)


def tensor_parallel_specs(axis: str = "model") -> tuple[Any, Any]:
    """Megatron-style specs over `axis`: heads and the FFN split, the vocabulary split; the KV
    caches split over their kv heads. Returns (param specs, cache spec)."""
    col, row = P(None, None, axis), P(None, axis, None)
    layers = {"wq": col, "wk": col, "wv": col, "wo": row, "w1": col, "w3": col, "w2": row, "ln1": None, "ln2": None}
    return {"embed": P(axis, None), "ln_f": None, "layers": layers}, P(None, None, None, axis, None)


def _layer(cfg: LlamaConfig, x: jax.Array, p: dict[str, jax.Array], ck: jax.Array, cv: jax.Array,
           pos: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One layer over T new tokens at positions pos..pos+T-1, with this layer's cache."""
    B, T, _ = x.shape
    KV, G, hd = cfg.kv_heads, cfg.heads // cfg.kv_heads, cfg.head_dim
    h = rms_norm(x, p["ln1"])
    q = (h @ p["wq"]).reshape(B, T, KV, G, hd)
    ck = jax.lax.dynamic_update_slice(ck, (h @ p["wk"]).reshape(B, T, KV, hd).astype(ck.dtype), (0, pos, 0, 0))
    cv = jax.lax.dynamic_update_slice(cv, (h @ p["wv"]).reshape(B, T, KV, hd).astype(cv.dtype), (0, pos, 0, 0))
    s = jnp.einsum("btkgd,bskd->bkgts", q, ck).astype(jnp.float32) / np.sqrt(hd)
    seen = jnp.arange(ck.shape[1])[None, :] <= (pos + jnp.arange(T))[:, None]  # causal, over the cache
    a = jax.nn.softmax(jnp.where(seen, s, -1e9), axis=-1).astype(x.dtype)
    x = x + jnp.einsum("bkgts,bskd->btkgd", a, cv).reshape(B, T, cfg.heads * hd) @ p["wo"]
    return x + swiglu(rms_norm(x, p["ln2"]), p["w1"], p["w3"], p["w2"]), ck, cv


def _forward(cfg: LlamaConfig) -> Callable[..., tuple[jax.Array, jax.Array, jax.Array]]:
    def run(params: dict[str, Any], cache_k: jax.Array, cache_v: jax.Array, tokens: jax.Array,
            pos: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        def body(x: jax.Array, layer: tuple) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
            p, ck, cv = layer
            x, ck, cv = _layer(cfg, x, p, ck, cv, pos)
            return x, (ck, cv)

        x, (cache_k, cache_v) = jax.lax.scan(body, params["embed"][tokens], (params["layers"], cache_k, cache_v))
        logits = (rms_norm(x[:, -1:], params["ln_f"]) @ params["embed"].T).astype(jnp.float32)
        return logits, cache_k, cache_v

    return run


def prefill(cfg: LlamaConfig) -> Callable[..., tuple[jax.Array, jax.Array, jax.Array]]:
    """(params, cache_k, cache_v, prompt [B, P], pos) -> (next-token logits, filled caches)."""
    return _forward(cfg)


def decode_step(cfg: LlamaConfig) -> Callable[..., tuple[jax.Array, jax.Array, jax.Array]]:
    """(params, cache_k, cache_v, tokens [B, 1], pos) -> (logits, caches with position pos written)."""
    return _forward(cfg)
