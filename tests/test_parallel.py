"""Pipeline and expert parallelism written with jax.shard_map: numerics on several simulated
devices equal one device, and thousand-chip training steps compile and estimate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import tpusim
from tpusim.errors import ShardingError, TraceError
from tpusim.models.parallel import (moe_dense, moe_layer, moe_train_step_shapes, pipeline, pipeline_train_step_shapes,
                                    sequential)

STAGES, D = 4, 32


def _stage(w: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.tanh(x @ w)


def _materialize(tree, seed: int = 0, scale: float = 0.05):
    rng = np.random.default_rng(seed)

    def make(s):
        if jnp.issubdtype(s.dtype, jnp.integer):
            return rng.integers(0, 64, size=s.shape).astype(s.dtype)
        return (rng.normal(size=s.shape) * scale).astype(s.dtype)

    return jax.tree.map(make, tree)


@pytest.fixture(scope="module")
def stage_data():
    rng = np.random.default_rng(0)
    ws = (rng.normal(size=(STAGES, D, D)) / np.sqrt(D)).astype(np.float32)
    xs = rng.normal(size=(6, 4, D)).astype(np.float32)
    return ws, xs


def test_pipeline_forward_and_gradient_equal_one_device(stage_data):
    ws, xs = stage_data
    pipe, seq = pipeline(_stage, STAGES), sequential(_stage, STAGES)
    c = tpusim.compile(pipe, ws, xs, device="v5e-4", mesh={"stage": STAGES}, in_specs=(P("stage"), None))
    prims = [k.op.prim for k in c.program.all_kernels() if k.kind == "collective"]
    assert "collective_permute" in prims and "all_reduce" in prims
    one = tpusim.compile(seq, ws, xs, device="v5e").run(ws, xs)
    np.testing.assert_allclose(c.run(ws, xs), one, atol=1e-6)
    np.testing.assert_allclose(c.run(ws, xs), jax.jit(seq)(ws, xs), atol=2e-2)  # bf16 MXU vs f32 JAX

    def loss(f):
        return lambda w, x: jnp.mean(f(w, x) ** 2)

    g = tpusim.compile(jax.grad(loss(pipe)), ws, xs, device="v5e-4", in_specs=(P("stage"), None))
    g_one = tpusim.compile(jax.grad(loss(seq)), ws, xs, device="v5e").run(ws, xs)
    np.testing.assert_allclose(g.run(ws, xs), g_one, atol=1e-8, rtol=1e-5)
    np.testing.assert_allclose(g.run(ws, xs), jax.grad(loss(seq))(ws, xs), atol=1e-4)
    # the pipeline's schedule: 4 stages x (6 + 3) steps, each a ppermute of one microbatch
    assert g.estimate().communication_s > 0


@pytest.mark.parametrize("mesh,tokens", [({"expert": 4}, "expert"), ({"data": 2, "expert": 4}, ("data", "expert"))])
def test_moe_layer_equals_dense_experts(mesh, tokens):
    rng = np.random.default_rng(1)
    E, Dm, F, T = 8, 32, 64, 64
    x = rng.normal(size=(T, Dm)).astype(np.float32)
    router = rng.normal(size=(Dm, E)).astype(np.float32)
    w1, w3 = (rng.normal(size=(2, E, Dm, F)) / 6).astype(np.float32)
    w2 = (rng.normal(size=(E, F, Dm)) / 8).astype(np.float32)
    args = (x, router, w1, w3, w2)
    n = int(np.prod(list(mesh.values())))
    c = tpusim.compile(moe_layer(2, "expert", tokens), *args, device=f"v5e-{n}", mesh=mesh,
                       in_specs=(P(tokens), None, P("expert"), P("expert"), P("expert")))
    prims = [k.op.prim for k in c.program.all_kernels() if k.kind == "collective"]
    assert prims.count("all_to_all") == 2
    dense_one = tpusim.compile(moe_dense(2), *args, device="v5e").run(*args)
    np.testing.assert_allclose(c.run(*args), dense_one, atol=1e-5)
    np.testing.assert_allclose(c.run(*args), jax.jit(moe_dense(2))(*args), atol=0.05, rtol=0.02)


def test_moe_training_step_on_eight_devices_equals_one():
    def build():  # a fresh function per mesh: JAX caches traced bodies across context meshes
        return moe_train_step_shapes(layers=2, d_model=32, heads=4, kv_heads=2, experts=4, d_ff=64, vocab=64, seq=8,
                                     batch=8, capacity_factor=None, dtype=jnp.float32)

    fn, shapes, specs = build()
    args = _materialize(shapes)
    eight = tpusim.compile(fn, *args, device="v5e-8", mesh={"data": 2, "expert": 4}, in_specs=specs)
    one = tpusim.compile(build()[0], *args, device="v5e", mesh={"data": 1, "expert": 1}, in_specs=specs)
    out8, out1 = eight.run(*args), one.run(*args)
    for a, b in zip(jax.tree.leaves(out8), jax.tree.leaves(out1)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)
    assert np.isfinite(float(out8[2]))


def test_pipelined_training_step_equals_sequential_model():
    kw = dict(stages=2, layers_per_stage=1, microbatches=3, microbatch=2, d_model=32, heads=4, d_ff=64, vocab=64, seq=8,
              dtype=jnp.float32)
    fn, shapes, specs = pipeline_train_step_shapes(**kw)
    ref_fn, _, _ = pipeline_train_step_shapes(**kw, pipelined=False)
    args = _materialize(shapes)
    c = tpusim.compile(fn, *args, device="v5e-4", mesh={"data": 2, "stage": 2}, in_specs=specs)
    ref = tpusim.compile(ref_fn, *args, device="v5e").run(*args)
    for a, b in zip(jax.tree.leaves(c.run(*args)), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)


def test_thousand_chip_pipeline_and_expert_parallel_steps_estimate():
    for (fn, shapes, specs), mesh, prim in [
            (moe_train_step_shapes(batch=1024), {"data": 128, "expert": 8}, "all_to_all"),
            (pipeline_train_step_shapes(microbatches=16, microbatch=256), {"data": 256, "stage": 4}, "collective_permute")]:
        c = tpusim.compile(fn, *shapes, device="v5p-2048", mesh=mesh, in_specs=specs, donate_argnums=(0, 1))
        est = c.estimate()
        assert prim in {k.op.prim for k in c.program.all_kernels() if k.kind == "collective"}
        assert 0.5 < est.time_s < 5 and 0 < est.exposed_communication_s <= est.communication_s
        assert est.peak_hbm_bytes < c.chip.device_hbm_bytes


def test_shard_map_needs_its_devices():
    ws, xs = np.zeros((STAGES, D, D), np.float32), np.zeros((6, 4, D), np.float32)

    def fn():
        return jax.shard_map(lambda w, x: x, mesh=jax.sharding.AbstractMesh((4,), ("stage",)),
                             in_specs=(P("stage"), P()), out_specs=P())

    with pytest.raises(ShardingError, match=r"\{'stage': 4\} \(4 devices\).*one v5e chip"):
        tpusim.compile(fn(), ws, xs, device="v5e")
    with pytest.raises(ShardingError, match="8 devices"):
        tpusim.compile(fn(), ws, xs, device="v5e-8")
    with pytest.raises(TraceError, match="should match the mesh passed to shard_map"):  # JAX's own check
        tpusim.compile(fn(), ws, xs, device="v5e-8", mesh={"stage": 8})


def test_mxu_epilogue_keeps_a_prologue_output():
    """Regression: the gradient of a tanh chain made a matmul whose prologue output (tanh) also
    leaves the kernel; the epilogue tried to recompute it (KeyError: kernel order)."""
    ws = (np.random.default_rng(2).normal(size=(STAGES, D, D)) / np.sqrt(D)).astype(np.float32)
    xs = np.random.default_rng(3).normal(size=(6, 4, D)).astype(np.float32)
    f = jax.grad(lambda w, x: jnp.mean(sequential(_stage, STAGES)(w, x) ** 2))
    np.testing.assert_allclose(tpusim.compile(f, ws, xs, device="v5e").run(ws, xs), f(ws, xs), atol=1e-4)
