"""Attention priced as the fused flash/splash kernel TPU stacks run: score matrices stay on chip."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tpusim
from tpusim.compiler.attention import score_shapes
from tpusim.frontend import lower, trace

B, T, H, D = 2, 256, 4, 32


def _loss(q, k, v):
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(D)
    s = jnp.where(jnp.tril(jnp.ones((T, T), bool)), s, -1e9)
    return jnp.sum(jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v) ** 2)


def _args():
    return [np.random.default_rng(i).normal(size=(B, T, H, D)).astype(np.float32) for i in range(3)]


def test_the_score_shape_of_plain_and_library_attention_is_found():
    for fn in (_loss, lambda q, k, v: jnp.sum(jax.nn.dot_product_attention(q, k, v, is_causal=True))):
        traced = trace(fn, *_args())
        shapes = score_shapes(lower(traced.closed_jaxpr, traced.const_names, traced.in_names))
        assert any(np.prod(s) == B * H * T * T and s[-2:] == (T, T) for s in shapes), shapes
    traced = trace(lambda a, b: jnp.tanh(a @ b), np.ones((4, 8, 8), np.float32), np.ones((4, 8, 8), np.float32))
    assert not score_shapes(lower(traced.closed_jaxpr, traced.const_names, traced.in_names))  # no softmax


def test_flash_attention_keeps_scores_off_hbm_forward_and_backward_with_the_same_numerics():
    grad = jax.grad(_loss, argnums=(0, 1, 2))
    args = _args()
    flash = tpusim.compile(grad, *args, device="v5e")  # auto: fused on a TPU
    xla = tpusim.compile(grad, *args, device="v5e", attention="xla")
    tt = B * H * T * T
    assert not [a for a in flash.program.allocations if a.value.size == tt]
    assert len([a for a in xla.program.allocations if a.value.size == tt]) >= 2
    assert flash.estimate().hbm_bytes < 0.5 * xla.estimate().hbm_bytes
    assert flash.peak_hbm_bytes < xla.peak_hbm_bytes
    for a, b in zip(jax.tree.leaves(flash.run(*args)), jax.tree.leaves(xla.run(*args))):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # on a GPU the default is XLA's own (unfused) attention
    assert tpusim.compile(grad, *args, device="h100").estimate().hbm_bytes > 2 * flash.estimate().hbm_bytes


def test_an_unknown_attention_mode_is_a_clear_error():
    with pytest.raises(tpusim.TpusimError, match="attention="):
        tpusim.compile(_loss, *_args(), device="v5e", attention="splash")


def _forward(mask: str):
    def fn(q, k, v):
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(D)
        i, j = jnp.arange(T)[:, None], jnp.arange(T)[None, :]
        visible = {"causal": i >= j, "window": (i >= j) & (i - j < 64), "none": None}[mask]
        if visible is not None:
            s = jnp.where(visible, s, -1e9)
        return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)
    return fn


def test_a_static_mask_tells_the_flash_kernel_which_key_blocks_each_query_block_visits():
    """Blocks of 128: a causal mask over 256 positions leaves 1 and 2 key blocks (3 of 4), a
    64-wide sliding window 1 and 2 as well (the window crosses the block edge), no mask all."""
    for mask, live in (("causal", (1.0, 2.0)), ("window", (1.0, 2.0)), ("none", (2.0, 2.0))):
        program = tpusim.compile(_forward(mask), *_args(), device="h100", attention="flash").program
        (region,) = program.attention
        assert region.live == live and region.matrices == B * H and region.key_blocks == 2 and not region.backward
        kinds = [program.kernels[i].kind for i in region.kernels]
        assert kinds[0] == kinds[-1] == "matmul" and set(kinds[1:-1]) == {"loop"}  # Q K^T, softmax, P V
    # a mask that depends on the inputs is not known at compile time: every block is visited
    dynamic = lambda q, k, v: _forward("none")(q, k, v) * (q[:, :1, :1, :1] > 0)  # noqa: E731
    program = tpusim.compile(dynamic, *_args(), device="h100", attention="flash").program
    assert program.attention[0].live_fraction == 1.0


def test_static_values_stay_compact_and_inputs_are_not_static():
    from tpusim.compiler.static_value import static_value

    n = 4096
    traced = trace(lambda x: jnp.where(jnp.tril(jnp.ones((n, n), bool)), x, 0.0), np.ones((n, n), np.float32))
    graph = lower(traced.closed_jaxpr, traced.const_names, traced.in_names)
    producer = {o.id: op for op in graph.walk() for o in op.outputs}
    select = next(op for op in graph.ops if op.prim == "select_n" and op.outputs[0].dtype == np.float32)
    mask = static_value(select.inputs[0], producer)
    assert mask is not None and np.array_equal(np.broadcast_to(mask, (n, n)), np.tril(np.ones((n, n), bool)))
    assert static_value(graph.inputs[0], producer) is None and static_value(select.outputs[0], producer) is None
    assert static_value(select.inputs[0], producer, limit=n) is None  # [n, n] pattern above the limit


def test_gpu_flash_kernel_skips_masked_blocks_and_times_as_one_kernel():
    big = [np.zeros((1, 4096, 16, 128), jnp.bfloat16)] * 3
    dense, causal = (tpusim.compile(_forward_at(4096, m), *big, device="h100", attention="flash").estimate()
                     for m in ("none", "causal"))
    assert 0.5 < causal.time_s / dense.time_s < 0.75  # 528 of 1024 blocks, the diagonal's last CTAs finish late
    fused = [o for o in dense.ops if o.kind == "attention"]
    assert len(fused) == 1 and sum(o.time_s for o in dense.ops if o.kind != "attention") < 0.02 * dense.time_s
    # a TPU keeps timing the parts one by one (the scores off HBM)
    tpu = tpusim.compile(_forward_at(4096, "causal"), *big, device="v5e").estimate()
    assert not [o for o in tpu.ops if o.kind == "attention"]


def _forward_at(t: int, mask: str):
    def fn(q, k, v):
        s = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
        if mask == "causal":
            s = jnp.where(jnp.arange(t)[:, None] >= jnp.arange(t)[None, :], s, -1e9)
        return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1).astype(q.dtype), v)
    return fn
