"""Model-parallel building blocks written the way JAX users write them, with `jax.shard_map`:
a GPipe-style pipeline over a "stage" mesh axis (microbatches passed on with ppermute) and a
Mixtral-style expert-parallel MoE layer (tokens sent to their experts with all_to_all). Each comes
with the plain single-device computation it must equal, and a training step of a model built
from it as ShapeDtypeStructs, so that thousand-chip configurations compile on a laptop.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from tpusim.models.blocks import adam, gqa_attention, lm_loss, rms_norm, swiglu


# ---- pipeline parallelism -------------------------------------------------------------------
def _vary(x: jax.Array, axes: tuple[str, ...]) -> jax.Array:
    """`x` typed as differing across `axes` (a loop carry that becomes per-device must start so)."""
    aval = jax.typeof(x)
    have = getattr(getattr(aval, "manual_axis_type", None), "varying", None)  # JAX >= 0.9
    have = getattr(aval, "vma", frozenset()) if have is None else have
    missing = tuple(a for a in axes if a not in have)
    return jax.lax.pcast(x, missing, to="varying") if missing else x


def pipeline(stage_fn: Callable[[Any, jax.Array], jax.Array], stages: int, axis: str = "stage",
             batch_axis: str | None = None) -> Callable[[Any, jax.Array], jax.Array]:
    """GPipe over mesh axis `axis`: `params` (every leaf stacked [stages, ...], split over the
    axis) and microbatches `xs` [M, mb, ...] -> `stage_fn` applied by every stage in turn to every
    microbatch, [M, mb, ...]. Stage s works on microbatch t - s at step t (M + stages - 1 steps);
    activations move to the next stage with a collective-permute, and the last stage's results
    are summed over the axis (the other stages contribute zeros). `batch_axis` splits each
    microbatch over a data-parallel axis as well."""

    def body(params: Any, xs: jax.Array) -> jax.Array:
        stage = jax.lax.axis_index(axis)
        mine = jax.tree.map(lambda p: p[0], params)
        n_micro = xs.shape[0]
        varying = (axis,) if batch_axis is None else (axis, batch_axis)
        state = _vary(jnp.zeros(xs.shape[1:], xs.dtype), varying)
        outs = _vary(jnp.zeros_like(xs), varying)

        def step(carry: tuple[jax.Array, jax.Array], t: jax.Array) -> tuple[tuple[jax.Array, jax.Array], None]:
            state, outs = carry
            inp = jnp.where(stage == 0, xs[jnp.minimum(t, n_micro - 1)], state)
            y = stage_fn(mine, inp)
            done = jnp.clip(t - (stages - 1), 0, n_micro - 1)
            keep = (stage == stages - 1) & (t >= stages - 1)
            outs = jax.lax.dynamic_update_index_in_dim(outs, jnp.where(keep, y, outs[done]), done, 0)
            state = jax.lax.ppermute(y, axis, [(i, (i + 1) % stages) for i in range(stages)])
            return (state, outs), None

        (_, outs), _ = jax.lax.scan(step, (state, outs), jnp.arange(n_micro + stages - 1))
        return jax.lax.psum(jnp.where(stage == stages - 1, outs, jnp.zeros_like(outs)), axis)

    data = P(None, batch_axis)
    return jax.shard_map(body, in_specs=(P(axis), data), out_specs=data)


def sequential(stage_fn: Callable[[Any, jax.Array], jax.Array], stages: int) -> Callable[[Any, jax.Array], jax.Array]:
    """What `pipeline` computes, on one device: every microbatch through every stage in order."""

    def run(params: Any, xs: jax.Array) -> jax.Array:
        for s in range(stages):
            xs = jax.vmap(lambda x, s=s: stage_fn(jax.tree.map(lambda p: p[s], params), x))(xs)
        return xs

    return run


# ---- mixture of experts ---------------------------------------------------------------------
def _route(x: jax.Array, router: jax.Array, top_k: int) -> tuple[jax.Array, jax.Array]:
    """(gate weight per token and expert [T, E], zero off its top_k), Mixtral's routing: softmax
    over the top_k router logits; also the 0/1 assignment mask."""
    logits = (x @ router).astype(jnp.float32)
    top, idx = jax.lax.top_k(logits, top_k)
    chosen = jax.nn.one_hot(idx, router.shape[-1], dtype=jnp.float32)  # [T, k, E]
    gates = jnp.einsum("tk,tke->te", jax.nn.softmax(top, axis=-1), chosen)
    return gates, chosen.sum(axis=1)


def moe_layer(top_k: int = 2, axis: str = "expert", token_axes: Any = "expert",
              capacity_factor: float | None = None) -> Callable[..., jax.Array]:
    """An expert-parallel MoE feed-forward layer: x [T, D] (tokens split over `token_axes`),
    router [D, E], expert SwiGLU weights w1, w3 [E, D, F] and w2 [E, F, D] (experts split over
    `axis`). Each device routes its tokens and packs them per expert into C capacity slots
    (GShard's dispatch; C = capacity_factor x T top_k / E, tokens past it are dropped; None:
    room for every token), sends each expert's slots to the device holding it with an
    all-to-all, runs its experts as batched matmuls, and brings the results back with a second
    all-to-all; tokens then combine their experts' outputs with the gate weights."""

    def body(x: jax.Array, router: jax.Array, w1: jax.Array, w3: jax.Array, w2: jax.Array) -> jax.Array:
        tokens, experts = x.shape[0], router.shape[-1]
        slots = tokens if capacity_factor is None else min(tokens, int(np.ceil(capacity_factor * tokens * top_k / experts)))
        gates, mask = _route(x, router, top_k)
        slot = jnp.cumsum(mask, axis=0).astype(jnp.int32) - 1  # each token's slot in its experts' buffers
        dispatch = mask[..., None] * jax.nn.one_hot(slot, slots, dtype=jnp.float32)  # [T, E, C]
        packed = jnp.einsum("tec,td->ecd", dispatch.astype(x.dtype), x)
        packed = jax.lax.all_to_all(packed, axis, 0, 1, tiled=True)  # [E_local, n*C, D]
        h = jax.nn.silu(jnp.einsum("ecd,edf->ecf", packed, w1)) * jnp.einsum("ecd,edf->ecf", packed, w3)
        out = jnp.einsum("ecf,efd->ecd", h, w2)
        out = jax.lax.all_to_all(out, axis, 1, 0, tiled=True)  # [E, C, D]
        combine = (dispatch * gates[..., None]).astype(x.dtype)
        return jnp.einsum("tec,ecd->td", combine, out)

    return jax.shard_map(body, in_specs=(P(token_axes), P(), P(axis), P(axis), P(axis)), out_specs=P(token_axes))


def moe_dense(top_k: int = 2) -> Callable[..., jax.Array]:
    """What `moe_layer` computes, on one device: every expert on every token, weighted by the
    gates (zero for experts a token did not choose)."""

    def run(x: jax.Array, router: jax.Array, w1: jax.Array, w3: jax.Array, w2: jax.Array) -> jax.Array:
        gates, _ = _route(x, router, top_k)
        every = jax.vmap(lambda a, b, c: swiglu(x, a, b, c))(w1, w3, w2)  # [E, T, D]
        return jnp.einsum("te,etd->td", gates.astype(x.dtype), every)

    return run


# ---- training steps at scale ----------------------------------------------------------------
def moe_train_step_shapes(layers: int = 32, d_model: int = 4096, heads: int = 32, kv_heads: int = 8,
                          experts: int = 8, top_k: int = 2, d_ff: int = 14336, vocab: int = 32000, seq: int = 4096,
                          batch: int = 8, data_axis: str = "data", expert_axis: str = "expert",
                          capacity_factor: float = 1.25, dtype: Any = jnp.bfloat16) -> tuple[Callable, tuple[Any, ...], tuple[Any, ...]]:
    """A Mixtral-shaped decoder training step (defaults: Mixtral 8x7B) as (fn, example args as
    ShapeDtypeStructs, in_specs) for a mesh {data_axis: d, expert_axis: e}: tokens split over both
    axes, attention weights split over `data_axis` (FSDP), experts over `expert_axis` (expert
    parallelism, the MoE layer in a shard_map, GShard dispatch with `capacity_factor`), layers
    under one remat'd scan, Adam."""

    def spec(*shape: int) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype)

    hd = d_model // heads
    layer_params = {"wq": spec(layers, d_model, heads * hd), "wk": spec(layers, d_model, kv_heads * hd),
                    "wv": spec(layers, d_model, kv_heads * hd), "wo": spec(layers, heads * hd, d_model),
                    "router": spec(layers, d_model, experts), "w1": spec(layers, experts, d_model, d_ff),
                    "w3": spec(layers, experts, d_model, d_ff), "w2": spec(layers, experts, d_ff, d_model),
                    "ln1": spec(layers, d_model), "ln2": spec(layers, d_model)}
    params = {"embed": spec(vocab, d_model), "layers": layer_params, "ln_f": spec(d_model)}
    tokens = jax.ShapeDtypeStruct((batch, seq + 1), jnp.int32)
    both = (data_axis, expert_axis)
    moe = moe_layer(top_k, expert_axis, both, capacity_factor)

    def layer(x: jax.Array, p: dict[str, jax.Array]) -> tuple[jax.Array, None]:
        x = x + gqa_attention(rms_norm(x, p["ln1"]), p, heads, kv_heads)
        B, T, D = x.shape
        h = rms_norm(x, p["ln2"]).reshape(B * T, D)
        return x + moe(h, p["router"], p["w1"], p["w3"], p["w2"]).reshape(B, T, D), None

    def loss_fn(params: dict[str, Any], tokens: jax.Array) -> jax.Array:
        x = params["embed"][tokens[:, :-1]]
        x, _ = jax.lax.scan(jax.checkpoint(layer), x, params["layers"])
        return lm_loss(x, params, tokens)

    def train_step(params: dict[str, Any], opt: dict[str, Any], tokens: jax.Array) -> tuple[Any, Any, jax.Array]:
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        return (*adam(params, opt, grads), loss)

    fsdp = P(None, data_axis)
    expert = P(None, expert_axis)
    layer_specs = {"wq": fsdp, "wk": fsdp, "wv": fsdp, "wo": P(None, None, data_axis), "router": None,
                   "w1": expert, "w3": expert, "w2": expert, "ln1": None, "ln2": None}
    p_specs = {"embed": P(None, data_axis), "layers": layer_specs, "ln_f": None}
    return train_step, (params, {"m": params, "v": params}, tokens), (p_specs, {"m": p_specs, "v": p_specs}, P(both))


def pipeline_train_step_shapes(stages: int = 4, layers_per_stage: int = 8, microbatches: int = 16,
                               microbatch: int = 4, d_model: int = 4096, heads: int = 32, d_ff: int = 16384,
                               vocab: int = 32000, seq: int = 2048, data_axis: str = "data", stage_axis: str = "stage",
                               dtype: Any = jnp.bfloat16, pipelined: bool = True
                               ) -> tuple[Callable, tuple[Any, ...], tuple[Any, ...]]:
    """A GPipe-pipelined decoder training step as (fn, example args as ShapeDtypeStructs,
    in_specs) for a mesh {data_axis: d, stage_axis: stages}: each stage holds layers_per_stage
    layers (a remat'd scan), microbatches split over `data_axis`; embedding and loss run
    data-parallel outside the pipeline; Adam. `pipelined=False` gives the same model with its
    stages run one after another on one device (the reference the pipeline must equal)."""

    def spec(*shape: int) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype)

    S, L = stages, layers_per_stage
    stage_params = {"wq": spec(S, L, d_model, d_model), "wk": spec(S, L, d_model, d_model),
                    "wv": spec(S, L, d_model, d_model), "wo": spec(S, L, d_model, d_model),
                    "w1": spec(S, L, d_model, d_ff), "w2": spec(S, L, d_ff, d_model),
                    "ln1": spec(S, L, d_model), "ln2": spec(S, L, d_model)}
    params = {"embed": spec(vocab, d_model), "stages": stage_params, "ln_f": spec(d_model)}
    tokens = jax.ShapeDtypeStruct((microbatches, microbatch, seq + 1), jnp.int32)

    def layer(x: jax.Array, p: dict[str, jax.Array]) -> tuple[jax.Array, None]:
        x = x + gqa_attention(rms_norm(x, p["ln1"]), p, heads, heads)
        return x + jax.nn.gelu(rms_norm(x, p["ln2"]) @ p["w1"]) @ p["w2"], None

    def stage_fn(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        return jax.lax.scan(jax.checkpoint(layer), x, p)[0]

    pipe = pipeline(stage_fn, stages, stage_axis, data_axis) if pipelined else sequential(stage_fn, stages)

    def loss_fn(params: dict[str, Any], tokens: jax.Array) -> jax.Array:
        return lm_loss(pipe(params["stages"], params["embed"][tokens[..., :-1]]), params, tokens)

    def train_step(params: dict[str, Any], opt: dict[str, Any], tokens: jax.Array) -> tuple[Any, Any, jax.Array]:
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        return (*adam(params, opt, grads), loss)

    p_specs = {"embed": P(None, data_axis), "stages": P(stage_axis), "ln_f": None}
    return train_step, (params, {"m": params, "v": params}, tokens), (p_specs, {"m": p_specs, "v": p_specs}, P(None, data_axis))
