"""FLOP counts from the graph, cross-checked against XLA's cost_analysis()."""

import jax
import jax.numpy as jnp
import pytest

import tpusim
from tpusim.frontend import lower, trace
from tpusim.ir import graph_counts


def xla_flops(fn, *args) -> float:
    ca = jax.jit(fn).lower(*args).compile().cost_analysis()
    ca = ca[0] if isinstance(ca, list) else ca
    return float(ca.get("flops", 0.0))


def counts(fn, *args):
    return graph_counts(lower(trace(fn, *args).closed_jaxpr))


def conv(x, w, stride=1, padding="VALID", dilation=1, groups=1):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, rhs_dilation=(dilation, dilation),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)


STRAIGHT_LINE = {
    "dense": (lambda x, w: x @ w, [(64, 128), (128, 32)]),
    "batched_einsum": (lambda a, b: jnp.einsum("bij,bjk->bik", a, b), [(4, 16, 32), (4, 32, 8)]),
    "mlp_relu_bias": (lambda x, w, b: jax.nn.relu(x @ w + b), [(64, 128), (128, 32), (32,)]),
    "conv_valid": (lambda x, w: conv(x, w), [(2, 10, 10, 4), (3, 3, 4, 8)]),
    "conv_strided_dilated": (lambda x, w: conv(x, w, 2, "VALID", 2), [(2, 17, 17, 4), (3, 3, 4, 8)]),
    "grouped_conv": (lambda x, w: conv(x, w, groups=2), [(1, 9, 9, 8), (3, 3, 4, 6)]),
    "elementwise": (lambda x: x * 2 + 1 - x / 3, [(64, 128)]),
    "reductions": (lambda x: jnp.sum(x, 1) + jnp.max(x, 1), [(64, 128)]),
    "maxpool": (lambda x: jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"), [(1, 8, 8, 4)]),
}


@pytest.mark.parametrize("name", sorted(STRAIGHT_LINE))
def test_flops_match_xla_on_straight_line_graphs(name):
    fn, shapes = STRAIGHT_LINE[name]
    args = [jnp.ones(s, jnp.float32) for s in shapes]
    assert counts(fn, *args).flops == pytest.approx(xla_flops(fn, *args))


def test_padded_conv_xla_counts_only_real_taps():
    """XLA skips taps that land on padding; the MXU executes them. tpusim reports both."""
    fn = lambda x, w: conv(x, w, padding="SAME")  # noqa: E731
    x, w = jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 4, 8))
    c = counts(fn, x, w)
    assert c.flops_xla == pytest.approx(xla_flops(fn, x, w))  # 30976: 0.84x of the full count
    assert c.flops == 2 * 8 * 8 * 8 * 4 * 9
    assert c.flops_xla / c.flops == pytest.approx(30976 / 36864)


def test_xla_counts_a_loop_body_once():
    def f(h, xs, w):
        return jax.lax.scan(lambda h, x: (jnp.tanh(h @ w + x), None), h, xs)[0]

    h, xs, w = jnp.ones((8, 32)), jnp.ones((20, 8, 32)), jnp.ones((32, 32))
    c = counts(f, h, xs, w)
    per_step = 2 * 8 * 32 * 32 + 8 * 32  # matmul + add
    assert c.flops == 20 * per_step
    assert c.transcendentals == 20 * 8 * 32
    assert xla_flops(f, h, xs, w) < 0.1 * c.flops  # XLA: one body (plus loop bookkeeping)


def _keras_forward(model):
    tv = [v.value for v in model.trainable_variables]
    return lambda x: model.stateless_call(tv, [], x, training=False)[0]


def _cnn(use_bias):
    import keras

    L = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1)), L.Conv2D(32, 3, activation="relu", use_bias=use_bias), L.MaxPooling2D(),
        L.Conv2D(64, 3, activation="relu", use_bias=use_bias), L.MaxPooling2D(),
        L.Conv2D(64, 3, activation="relu", use_bias=use_bias), L.Flatten(),
        L.Dense(64, activation="relu", use_bias=use_bias), L.Dense(10, activation="softmax", use_bias=use_bias)])


def test_keras_cnn_flops_match_xla_exactly_without_bias(rng):
    model = _cnn(use_bias=False)
    x = jnp.asarray(rng.normal(size=(4, 28, 28, 1)), jnp.float32)
    assert tpusim.compile(model, x).counts().flops_xla == xla_flops(_keras_forward(model), x)


def test_xla_cpu_omits_bias_adds_it_fuses_into_onednn_calls(rng):
    """The one difference on the classic CNN: XLA:CPU rewrites conv/matmul + bias into a
    oneDNN call whose cost leaves out the bias add. tpusim counts it (1 FLOP per output)."""
    model = _cnn(use_bias=True)
    x = jnp.asarray(rng.normal(size=(4, 28, 28, 1)), jnp.float32)
    ours = tpusim.compile(model, x).counts().flops_xla
    bias_adds = 4 * (26 * 26 * 32 + 11 * 11 * 64 + 3 * 3 * 64 + 64 + 10)
    assert ours - xla_flops(_keras_forward(model), x) == bias_adds


def test_mxu_plan_counts_padding(rng):
    c = tpusim.compile(lambda x, w: x @ w, jnp.ones((7, 129)), jnp.ones((129, 1000)), device="v4")
    plan = c.kernels[0].mxu
    assert (plan.Mp, plan.Kp, plan.Np) == (16, 256, 1024)  # M to the bf16 sublane tile, K and N to 128
    assert plan.useful_flops == 2 * 7 * 129 * 1000
    assert plan.issued_flops == 2 * 16 * 256 * 1024
    v6e = tpusim.compile(lambda x, w: x @ w, jnp.ones((7, 129)), jnp.ones((129, 1000)), device="v6e").kernels[0].mxu
    assert (v6e.Kp, v6e.Np) == (256, 1024)  # 256x256 MXU
