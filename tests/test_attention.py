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
