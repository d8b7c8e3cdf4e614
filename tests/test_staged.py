"""Staged numerics (sim/staged.py): one jit-compiled function per program, the same bits as the
kernel-by-kernel interpreter, and close to the strict NumPy walk of every MXU grid step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tpusim
from tpusim.models import classic_cnn, lstm_text_model
from tpusim.reference import bf16_reference, relative_error
from tpusim.sim.numerics import run_program


def _flat(args):
    return [np.asarray(a) for a in jax.tree.leaves(args)]


def _cases():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    w = rng.standard_normal((16, 16)).astype(np.float32) * 0.3

    def loops(w, x):
        def body(c, xs):
            return jnp.tanh(c @ w + xs), c.sum()
        c, ys = jax.lax.scan(body, x, jnp.stack([x, 2 * x, 3 * x]))
        c = jax.lax.while_loop(lambda c: jnp.abs(c).sum() < 100.0, lambda c: c * 1.5 + 0.1, c)
        return jax.lax.cond(ys.sum() > 0, lambda c: c @ w, lambda c: -c, c), ys

    def highest(w, x):
        return jnp.dot(x, w, precision=jax.lax.Precision.HIGHEST)

    def depthwise(k, img):
        return jax.lax.conv_general_dilated(img, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=8)

    def attention(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, is_causal=True)

    def cnn_grad(params, img):
        def loss(p):
            h = jax.lax.conv_general_dilated(img, p["k"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            return jnp.mean(jax.nn.relu(h) @ p["w"])
        return jax.grad(loss)(params)

    qkv = [rng.standard_normal((2, 32, 4, 16)).astype(np.float32) for _ in range(3)]
    img = rng.standard_normal((2, 8, 8, 8)).astype(np.float32)
    cnn_params = {"k": rng.standard_normal((3, 3, 8, 16)).astype(np.float32) * 0.2,
                  "w": rng.standard_normal((16, 4)).astype(np.float32)}
    return [
        ("loops", loops, (w, x), "v5e"),
        ("highest precision", highest, (w, x), "v5e"),
        ("depthwise", depthwise, (rng.standard_normal((3, 3, 1, 8)).astype(np.float32), img), "v4"),
        ("attention", attention, qkv, "v5e"),
        ("cnn gradient", cnn_grad, (cnn_params, img), "v4"),
        ("int8 mlp on v1", lambda w, x: jax.nn.relu(x @ w) @ w, (w, x), "v1"),
    ]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_staged_run_is_the_interpreter_bit_for_bit(case):
    _, fn, args, device = case
    compiled = tpusim.compile(fn, *args, device=device)
    staged = jax.tree.leaves(compiled.run(*args))
    interpreted = run_program(compiled.program, _flat(args))
    assert len(staged) == len(interpreted)
    for s, i in zip(staged, interpreted):
        assert np.array_equal(np.asarray(s), np.asarray(i), equal_nan=True)
    strict = jax.tree.leaves(compiled.run(*args, strict=True))  # the NumPy walk: f32 sums in another order
    tol = 5e-2 if device == "v1" else 1e-5
    assert relative_error(staged, strict) < tol


def test_keras_models_staged_match_the_bf16_reference_and_compile_once():
    x = np.random.default_rng(1).normal(size=(8, 28, 28, 1)).astype(np.float32)
    model = classic_cnn()
    compiled = tpusim.compile(model, x, device="v4")
    out = compiled.run(x)
    assert relative_error(out, bf16_reference(model, x)) < 1e-6  # the same XLA arithmetic
    staged = compiled._cache["staged"]
    compiled.run(x)
    assert compiled._cache["staged"] is staged  # staged once, reused
    tokens = np.random.default_rng(2).integers(0, 1000, (4, 20)).astype(np.int32)
    lstm = lstm_text_model()
    c = tpusim.compile(lstm, tokens, device="v5e")
    assert np.array_equal(c.run(tokens), run_program(c.program, [tokens])[0])


def _interpreted_sharded(compiled, args):
    """The kernel-by-kernel lockstep interpreter (sim/spmd.py) on the same per-device blocks."""
    from tpusim.compiler.shard import device_coords, local_block
    from tpusim.sim.spmd import assemble, run_spmd

    dist = compiled.distribution
    axes = dist.sharded.mesh_axes
    flat = [np.asarray(a).astype(s.dtype) for a, s in zip(jax.tree.leaves(args), compiled.traced.in_avals)]
    per_device = [[local_block(a, sh, device_coords(d, axes), axes) for a, sh in zip(flat, dist.sharded.in_shardings)]
                  for d in range(dist.devices)]
    outs = run_spmd(compiled.program, axes, per_device, False)
    return [assemble([o[i] for o in outs], sh, axes) for i, sh in enumerate(dist.sharded.out_shardings)]


def _sharded_cases():
    from jax.sharding import PartitionSpec as P

    from tpusim.models import transformer_example
    from tpusim.models.parallel import moe_layer

    rng = np.random.default_rng(3)
    fn, params, x, mask = transformer_example(batch=8, seq=16, d_model=64, heads=4, d_ff=128)
    col, row = {"wq", "wk", "wv", "w1"}, {"wo", "w2"}
    tp = {k: P(None, "model") if k in col else P("model", None) if k in row else (P("model") if k == "b1" else None)
          for k in params}
    ws, h = rng.normal(size=(5, 32, 32)).astype(np.float32) * 0.2, rng.normal(size=(8, 32)).astype(np.float32)
    scan = lambda ws, x: jax.lax.scan(lambda h, w: (jnp.tanh(h @ w), h.sum()), x, ws)  # noqa: E731
    E, Dm, F, T = 8, 32, 64, 64
    moe_args = (rng.normal(size=(T, Dm)).astype(np.float32), rng.normal(size=(Dm, E)).astype(np.float32),
                *(rng.normal(size=(2, E, Dm, F)) / 6).astype(np.float32), (rng.normal(size=(E, F, Dm)) / 8).astype(np.float32))
    return [
        ("transformer data x tensor", fn, (params, x, mask), "v5e-8", {"data": 2, "model": 4}, (tp, P("data"), P("data"))),
        ("scan in lockstep", scan, (ws, h), "v5e-4", {"d": 4}, (P(None, "d"), P("d"))),
        ("moe all-to-all", moe_layer(2, "expert", "expert"), moe_args, "v5e-4", {"expert": 4},
         (P("expert"), None, P("expert"), P("expert"), P("expert"))),
    ]


@pytest.mark.parametrize("case", _sharded_cases(), ids=lambda c: c[0])
def test_staged_sharded_run_is_the_lockstep_interpreter(case):
    _, fn, args, device, mesh, specs = case
    compiled = tpusim.compile(fn, *args, device=device, mesh=mesh, in_specs=specs)
    staged = jax.tree.leaves(compiled.run(*args))
    interpreted = _interpreted_sharded(compiled, args)
    assert len(staged) == len(interpreted)
    for s, i in zip(staged, interpreted):
        assert np.array_equal(np.asarray(s), np.asarray(i))
    assert "staged_spmd" in compiled._cache
