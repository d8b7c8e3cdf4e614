import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tpusim
from tpusim.frontend import lower, trace


def test_keras_backend_is_jax_without_tensorflow(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "KERAS_HOME")}
    env["HOME"] = str(tmp_path)  # a user with no ~/.keras
    code = "import tpusim, keras; print(keras.backend.backend())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "jax"
    assert not (tmp_path / ".keras").exists(), "tpusim must not create ~/.keras"


def test_shape_dtype_struct_needs_no_data():
    c = tpusim.compile(lambda x, w: x @ w, jax.ShapeDtypeStruct((8, 16), jnp.float32),
                       jax.ShapeDtypeStruct((16, 4), jnp.float32), device="v4")
    assert c.flops == 2 * 8 * 16 * 4


def test_nested_jit_and_custom_jvp_are_inlined():
    @jax.jit
    def inner(x):
        return jax.nn.relu(x) * 2  # relu is a custom_jvp

    g = lower(trace(lambda x: inner(x) + 1, jnp.ones(4)).closed_jaxpr)
    prims = [op.prim for op in g.ops]
    assert "jit" not in prims and "custom_jvp_call" not in prims
    assert "max" in prims


def test_custom_vjp_is_inlined(rng):
    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    f.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * jnp.cos(x),))
    x = rng.normal(size=(5,)).astype(np.float32)
    c = tpusim.compile(lambda x: f(x) * 3, x)
    np.testing.assert_allclose(c.run(x), np.sin(x) * 3, rtol=1e-6)


def test_long_scan_stays_a_loop():
    def f(x):
        return jax.lax.scan(lambda c, _: (c * 0.999 + 1.0, None), x, None, length=1000)[0]

    c = tpusim.compile(f, jnp.ones((8, 128)))
    assert [op.prim for op in c.graph.ops] == ["scan"]
    body_ops = c.graph.ops[0].subgraphs["body"].ops
    assert len(body_ops) == 2
    assert c.counts().flops == 1000 * 2 * 8 * 128  # counted per iteration, not unrolled
    np.testing.assert_allclose(c.run(np.ones((8, 128), np.float32)), np.asarray(f(jnp.ones((8, 128)))), rtol=1e-5)


def test_fori_loop_trip_count_and_while():
    def f(x):
        return jax.lax.fori_loop(0, 7, lambda i, c: c * 2.0, x)

    c = tpusim.compile(f, jnp.ones(3))
    assert c.counts().flops == 7 * (3 + 1)  # the multiply, and the loop counter increment
    np.testing.assert_allclose(c.run(np.ones(3, np.float32)), np.full(3, 128.0))

    def g(x):  # data-dependent trip count: a real while loop
        return jax.lax.while_loop(lambda c: c[0] < 100.0, lambda c: c * 2.0, x)

    c = tpusim.compile(g, jnp.ones(2))
    assert c.graph.ops[0].prim == "while"
    np.testing.assert_allclose(c.run(np.ones(2, np.float32)), np.asarray(g(jnp.ones(2))))


def test_cond_runs_the_right_branch():
    def f(p, x):
        return jax.lax.cond(p > 0, lambda x: x @ x.T, lambda x: -x @ x.T, x)

    x = np.eye(4, dtype=np.float32)
    c = tpusim.compile(f, np.float32(1.0), x)
    np.testing.assert_allclose(c.run(np.float32(1.0), x), np.eye(4))
    np.testing.assert_allclose(c.run(np.float32(-1.0), x), -np.eye(4))


def test_unsupported_primitive_names_it_and_the_source_line():
    def model(x):
        return jnp.linalg.cholesky(x @ x.T + 4 * jnp.eye(4))  # the line to report

    with pytest.raises(tpusim.UnsupportedOpError) as e:
        tpusim.compile(model, jnp.ones((4, 4)))
    msg = str(e.value)
    assert "cholesky" in msg and "test_frontend.py" in msg
    assert e.value.primitive == "cholesky"
    assert isinstance(e.value, tpusim.TpusimError)


def test_tracing_failure_is_a_tpusim_error():
    with pytest.raises(tpusim.TpusimError, match="could not trace"):
        tpusim.compile(lambda x, y: x @ y, jnp.ones((2, 3)), jnp.ones((4, 5)))


def test_run_checks_argument_shapes():
    c = tpusim.compile(lambda x: x + 1, jnp.ones((2, 3)))
    with pytest.raises(tpusim.InputMismatchError, match="compiled for"):
        c.run(np.ones((3, 3), np.float32))


def test_pytree_inputs_and_outputs(rng):
    def f(params, x):
        h = x @ params["w"] + params["b"]
        return {"out": h, "stats": (h.mean(), h.max())}

    params = {"w": rng.normal(size=(6, 3)).astype(np.float32), "b": np.zeros(3, np.float32)}
    x = rng.normal(size=(4, 6)).astype(np.float32)
    out = tpusim.compile(f, params, x, precision="highest").run(params, x)
    ref = f(params, x)
    assert set(out) == {"out", "stats"} and isinstance(out["stats"], tuple)
    np.testing.assert_allclose(out["out"], ref["out"], rtol=1e-5, atol=1e-6)


def test_bad_precision_is_rejected():
    with pytest.raises(tpusim.TpusimError, match="precision"):
        tpusim.compile(lambda x: x, jnp.ones(2), precision="fp8")


@pytest.mark.parametrize("fn", [
    lambda a: jnp.stack([a, 2 * a, a * a], axis=1),
    lambda a: jnp.tile(a, (3, 1, 2)),
    lambda a: jnp.unstack(a, axis=1)[3] + jnp.unstack(a, axis=0)[1][0],
    jax.grad(lambda a: jnp.sum(jnp.stack([a, a * a], 1) ** 2)),
    jax.grad(lambda a: jnp.sum(jnp.tile(a, (2, 3)) ** 3)),
], ids=["stack", "tile", "unstack", "stack-grad", "tile-grad"])
def test_stack_tile_and_unstack_run_on_one_chip_and_sharded(fn):
    """Current JAX emits `stack`, `unstack` (its transpose) and `tile` as primitives of their
    own (keras_hub's Llama/Gemma/Mistral use stack, ViT/CLIP tile)."""
    x = np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32)
    want = np.asarray(fn(x))
    np.testing.assert_allclose(tpusim.compile(fn, x, device="v4").run(x), want, rtol=1e-6, atol=1e-5)
    sharded = tpusim.compile(fn, x, device="v5e-8", mesh={"data": 8}, in_specs=(jax.sharding.PartitionSpec("data"),))
    np.testing.assert_allclose(sharded.run(x), want, rtol=1e-6, atol=1e-5)


def test_reshard_under_an_explicit_mesh_runs_as_the_identity_on_one_chip():
    from jax.sharding import AxisType, PartitionSpec

    x = np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32)
    mesh = jax.make_mesh((1,), ("x",), axis_types=(AxisType.Explicit,))
    with jax.sharding.set_mesh(mesh):
        compiled = tpusim.compile(lambda a: jax.sharding.reshard(a * 2, PartitionSpec("x")) + 1, x, device="v4")
        np.testing.assert_allclose(compiled.run(x), x * 2 + 1)


def test_generic_reduce_with_its_own_combiner():
    """`lax.reduce` with a user combiner (several operands, a custom monoid) runs as a reduction."""
    from jax import lax

    def f(a, b):
        return lax.reduce((jnp.tanh(a), b), (0.0, -jnp.inf), lambda x, y: (x[0] + y[0], jnp.maximum(x[1], y[1])), (0,))

    x = np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32)
    compiled = tpusim.compile(f, x, x, device="v4")
    for got, want in zip(compiled.run(x, x), f(x, x)):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert compiled.counts().flops >= 2 * (8 - 1) * 16


def test_typed_prng_key_arguments_run_and_match_jax():
    """Typed keys (jax.random.key; flax.nnx keeps its Rngs as such) are passed through as keys."""
    def f(state, x):
        k1, k2 = jax.random.split(state["rng"])
        return x + jax.random.normal(k1, x.shape) * jax.random.uniform(k2, x.shape)

    state, x = {"rng": jax.random.key(3)}, np.ones((4, 8), np.float32)
    compiled = tpusim.compile(f, state, x, device="v4")
    np.testing.assert_allclose(compiled.run(state, x), f(state, x), rtol=1e-5, atol=1e-6)
    with pytest.raises(tpusim.TpusimError, match="PRNG key"):
        compiled.run({"rng": jax.random.PRNGKey(3)}, x)  # a raw uint32 key is not the typed key compiled for


def test_complex_values_and_ffts_compile_and_match_jax():
    """Complex arithmetic runs on (real, imaginary) pairs and FFTs are kernels of their own
    (5 n log2 n operations per transform); a complex matmul is a typed error."""
    import math

    from tpusim.errors import UnsupportedOpError

    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    programs = {
        "fft2": lambda x: jnp.fft.fft2(x).real,
        "rfft round trip": lambda x: jnp.fft.irfft(jnp.fft.rfft(x) * 2.0, n=16),
        "complex arithmetic": lambda x: jnp.abs((x + 1j * x) * (2.0 - 1j * x) / (1.0 + 1j)),
        "complex result": lambda x: jnp.fft.fft(x),
    }
    for name, fn in programs.items():
        compiled = tpusim.compile(fn, x)
        np.testing.assert_allclose(compiled.run(x), fn(x), rtol=1e-5, atol=1e-5, err_msg=name)
        assert compiled.estimate().time_s > 0
    fft = [op for op in tpusim.compile(lambda x: jnp.fft.fft(x), x).graph.ops if op.prim == "fft"][0]
    from tpusim.ir.counts import op_counts

    assert op_counts(fft).flops == pytest.approx(5 * 16 * math.log2(16) * 4)
    with pytest.raises(UnsupportedOpError, match="complex matmul"):
        tpusim.compile(lambda x: (x + 1j * x) @ (x.T + 0j), x)


def test_ragged_dot_grouped_matmul_and_its_gradients():
    """jax.lax.ragged_dot (MoE experts as one grouped matmul): the MXU's arithmetic on every row
    against its group's matrix, forward and both gradients, with the work of one dense matmul."""
    from tpusim.reference import bf16_reference, relative_error

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((64, 32)).astype(np.float32), rng.standard_normal((4, 32, 16)).astype(np.float32)
    sizes = np.array([10, 20, 30, 4], np.int32)

    def loss(x, w, sizes):
        return jnp.sum(jax.nn.relu(jax.lax.ragged_dot(x, w, sizes)) ** 2)

    step = jax.value_and_grad(loss, argnums=(0, 1))
    compiled = tpusim.compile(step, x, w, sizes, device="v5e")
    out = compiled.run(x, w, sizes)
    assert relative_error(out, bf16_reference(step, x, w, sizes)) < 1e-5
    assert relative_error(out, step(x, w, sizes)) < 1e-2
    fwd = tpusim.compile(lambda x, w, s: jax.lax.ragged_dot(x, w, s), x, w, sizes)
    assert fwd.counts().flops == 2 * 64 * 32 * 16
    assert sum(k.mxu is not None for k in compiled.program.kernels) == 3  # forward, dx, dw on the MXU


def test_generic_reduce_window_and_total_order_comparisons():
    """lax.reduce_window with its own combiner (variadic too) and the total-order comparisons
    searchsorted emits (le_to) compile and match JAX."""
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    programs = [
        lambda x: jax.lax.reduce_window(x, 1.0, jax.lax.mul, (1, 2), (1, 2), "VALID"),
        lambda x: jax.lax.reduce_window((x, 2 * x), (0.0, -jnp.inf), lambda a, b: (a[0] + b[0], jnp.maximum(a[1], b[1])),
                                        (1, 3), (1, 1), "SAME")[1],
        lambda x: jnp.searchsorted(jnp.sort(x[0]), x[1]),
    ]
    for fn in programs:
        compiled = tpusim.compile(fn, x)
        np.testing.assert_array_equal(compiled.run(x), fn(x))
        assert compiled.estimate().time_s > 0
