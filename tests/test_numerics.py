"""MXU numerics against JAX: blocks, precisions and awkward shapes (property tests)."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import tpusim
from tpusim.reference import bf16_reference, relative_error

AWKWARD = st.sampled_from([1, 7, 127, 129, 1000]) | st.integers(1, 300)
U_BF16 = 2.0**-8  # unit roundoff of bf16: 8 significant bits, half an ulp of 2^-7


def run_both(fn, *args, device="v4", precision="default", strict=False):
    compiled = tpusim.compile(fn, *args, device=device, precision=precision)
    return compiled.run(*args, strict=strict), compiled


def rand(rng, shape, dtype=np.float32):
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-20, 20, size=shape).astype(dtype)
    return rng.normal(size=shape).astype(np.float32).astype(dtype)


@given(m=AWKWARD, k=AWKWARD, n=AWKWARD, seed=st.integers(0, 2**16))
def test_matmul_matches_bf16_reference(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a, b = rand(rng, (m, k)), rand(rng, (k, n))
    out, _ = run_both(lambda a, b: a @ b, a, b)
    assert relative_error(out, bf16_reference(lambda a, b: a @ b, a, b)) < 1e-5


@given(batch=st.integers(1, 3), m=AWKWARD, k=AWKWARD, n=st.integers(1, 40),
       dtype=st.sampled_from(["float32", "bfloat16", "int32"]), seed=st.integers(0, 2**16))
def test_batched_dot_general_dtypes(batch, m, k, n, dtype, seed):
    rng = np.random.default_rng(seed)
    dt = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    a, b = rand(rng, (batch, m, k), dt), rand(rng, (k, batch, n), dt)
    acc_type = jnp.int32 if dtype == "int32" else jnp.float32

    def f(a, b):  # batch dims in different positions, explicit accumulation type
        return jax.lax.dot_general(a, b, (((2,), (0,)), ((0,), (1,))), preferred_element_type=acc_type)

    out, _ = run_both(f, a, b)
    ref = bf16_reference(f, a, b)
    if dtype == "int32":
        np.testing.assert_array_equal(out, ref)
    else:
        assert relative_error(out, ref) < 1e-5


def test_bf16_output_is_rounded_like_jax(rng):
    a, b = rand(rng, (64, 300), ml_dtypes.bfloat16), rand(rng, (300, 50), ml_dtypes.bfloat16)
    out, _ = run_both(lambda a, b: a @ b, a, b)
    assert out.dtype == ml_dtypes.bfloat16
    assert relative_error(out, np.asarray(jnp.asarray(a) @ jnp.asarray(b))) < 4e-3  # one bf16 rounding


def test_strict_block_walk_equals_batched_walk(rng):
    a, b = rand(rng, (1000, 700)), rand(rng, (700, 300))
    compiled = tpusim.compile(lambda a, b: a @ b, a, b, device="v4", vmem_fraction=0.02)
    plan = compiled.kernels[0].mxu
    assert plan.grid[0] > 1 and plan.grid[2] > 1  # several M and K blocks
    # Same blocks and K order; only BLAS's f32 summation order inside a block may differ.
    assert relative_error(compiled.run(a, b, strict=True), compiled.run(a, b)) < 1e-6


@given(m=AWKWARD, k=AWKWARD, n=st.integers(1, 200), seed=st.integers(0, 2**16))
def test_highest_precision_is_f32_accurate(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a, b = rand(rng, (m, k)), rand(rng, (k, n))
    out, _ = run_both(lambda a, b: a @ b, a, b, precision="highest")
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert relative_error(out, exact) < 1e-5
    assert relative_error(out, np.asarray(jnp.asarray(a) @ jnp.asarray(b))) < 1e-5


@given(m=AWKWARD, k=AWKWARD, n=st.integers(1, 200), seed=st.integers(0, 2**16))
def test_default_precision_error_is_within_the_bf16_bound(m, k, n, seed):
    """Rounding each input to bf16 perturbs every product by at most (2u + u^2) of its size,
    so |C - C_exact| <= (2u + u^2) |A| |B| (+ f32 accumulation error, far smaller)."""
    rng = np.random.default_rng(seed)
    a, b = rand(rng, (m, k)), rand(rng, (k, n))
    out, _ = run_both(lambda a, b: a @ b, a, b)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    bound = (2 * U_BF16 + U_BF16**2) * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
    f32_slack = k * 2.0**-23 * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
    assert np.all(np.abs(out - exact) <= bound + f32_slack)


def _conv_fn(dims, stride, padding, lhs_dil, rhs_dil, groups):
    def f(x, w):
        return jax.lax.conv_general_dilated(x, w, stride, padding, lhs_dilation=lhs_dil, rhs_dilation=rhs_dil,
                                            dimension_numbers=dims, feature_group_count=groups)
    return f


@given(
    n=st.integers(1, 2), size=st.integers(1, 12), cin_g=st.sampled_from([1, 3, 7, 129]) | st.integers(1, 9),
    cout_g=st.integers(1, 8), groups=st.integers(1, 3), kernel=st.integers(1, 4), stride=st.integers(1, 3),
    rhs_dil=st.integers(1, 2), lhs_dil=st.integers(1, 2),
    padding=st.sampled_from(["VALID", "SAME"]) | st.tuples(st.integers(-1, 3), st.integers(-1, 3)),
    layout=st.sampled_from([("NHWC", "HWIO", "NHWC"), ("NCHW", "OIHW", "NCHW")]), seed=st.integers(0, 2**16),
)
def test_conv2d_matches_bf16_reference(n, size, cin_g, cout_g, groups, kernel, stride, rhs_dil, lhs_dil, padding, layout, seed):
    if lhs_dil > 1 and isinstance(padding, str) and padding == "SAME":
        padding = "VALID"  # SAME is not defined with lhs dilation
    pad = padding if isinstance(padding, str) else (padding, padding)
    cin, cout = cin_g * groups, cout_g * groups
    x_shape = (n, size, size, cin) if layout[0] == "NHWC" else (n, cin, size, size)
    w_shape = (kernel, kernel, cin_g, cout) if layout[1] == "HWIO" else (cout, cin_g, kernel, kernel)
    f = _conv_fn(layout, (stride, stride), pad, (lhs_dil, lhs_dil), (rhs_dil, rhs_dil), groups)
    try:
        out_shape = jax.eval_shape(f, jax.ShapeDtypeStruct(x_shape, jnp.float32), jax.ShapeDtypeStruct(w_shape, jnp.float32)).shape
    except (TypeError, ValueError):
        assume(False)
    assume(all(d > 0 for d in out_shape))
    rng = np.random.default_rng(seed)
    x, w = rand(rng, x_shape), rand(rng, w_shape)
    out, _ = run_both(f, x, w)
    assert out.shape == out_shape
    assert relative_error(out, bf16_reference(f, x, w)) < 1e-5


@pytest.mark.parametrize("dims,x_shape,w_shape", [
    (("NWC", "WIO", "NWC"), (2, 50, 7), (5, 7, 9)),  # Conv1D
    (("NDHWC", "DHWIO", "NDHWC"), (1, 6, 7, 8, 3), (2, 3, 3, 3, 4)),  # Conv3D
])
def test_conv_1d_and_3d(rng, dims, x_shape, w_shape):
    nsp = len(x_shape) - 2
    f = _conv_fn(dims, (1,) * nsp, "SAME", (1,) * nsp, (1,) * nsp, 1)
    x, w = rand(rng, x_shape), rand(rng, w_shape)
    out, _ = run_both(f, x, w)
    assert relative_error(out, bf16_reference(f, x, w)) < 1e-5
    out_hi, _ = run_both(f, x, w, precision="highest")
    assert relative_error(out_hi, np.asarray(f(x, w))) < 1e-5


def test_depthwise_conv(rng):
    f = _conv_fn(("NHWC", "HWIO", "NHWC"), (1, 1), "SAME", (1, 1), (1, 1), 32)
    x, w = rand(rng, (2, 9, 9, 32)), rand(rng, (3, 3, 1, 32))
    out, _ = run_both(f, x, w)
    assert relative_error(out, bf16_reference(f, x, w)) < 1e-5


def test_int8_mxu_of_tpu_v1(rng):
    """TPU v1: symmetric int8 quantization (per tensor for activations, per output column for
    weights), int32 accumulation; error is at the int8 quantization level."""
    a, b = rand(rng, (64, 256)), rand(rng, (256, 32))
    out, compiled = run_both(lambda a, b: a @ b, a, b, device="v1")
    assert compiled.kernels[0].mxu.precision == "int8"
    err = relative_error(out, a.astype(np.float64) @ b.astype(np.float64))
    assert 1e-4 < err < 2e-2


def test_multi_pass_precisions_are_ordered(rng):
    a, b = rand(rng, (128, 512)), rand(rng, (512, 64))
    exact = a.astype(np.float64) @ b.astype(np.float64)
    errs = [relative_error(run_both(lambda a, b: a @ b, a, b, precision=p)[0], exact) for p in ("default", "high", "highest")]
    assert errs[0] > 10 * errs[1] > 10 * errs[2] and errs[2] < 1e-6


def test_a_prologue_value_that_leaves_the_kernel_is_kept(rng):
    """A matmul kernel whose prologue makes a value the program also returns (ViT's patch
    embedding did this): the value is written out, not lost (it used to be a KeyError)."""
    def f(x, w):
        y = jnp.tanh(x)
        return y @ w, y

    x, w = rand(rng, (64, 128)), rand(rng, (128, 128))
    got = tpusim.compile(f, x, w, device="v5e").run(x, w)
    assert relative_error(got, bf16_reference(f, x, w)) < 1e-5
