"""Depthwise, grouped and separable convolutions: mapped and priced as XLA:TPU runs them."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from jax import lax  # noqa: E402

import tpusim  # noqa: E402
from tpusim.reference import bf16_reference, relative_error  # noqa: E402
from tpusim.compiler.tiling import is_depthwise  # noqa: E402
from tpusim.sim.estimate import timer_for  # noqa: E402

DN = ("NHWC", "HWIO", "NHWC")


def _conv(groups: int, stride: int = 1):
    def f(x, w):
        return lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=DN, feature_group_count=groups)
    return f


def _conv_kernel_time(compiled) -> tuple[object, object]:
    est = compiled.estimate()
    kernel = next(k for k in compiled.program.kernels if k.kind == "conv")
    return kernel, next(t for t in est.ops if t.name == kernel.name)


@pytest.mark.parametrize("device", ["v5e", "v4"])
@pytest.mark.parametrize("n,hw,c,k,stride", [(8, 56, 96, 7, 1), (8, 112, 32, 3, 2), (1, 7, 1152, 5, 1), (32, 28, 256, 3, 1)])
def test_a_depthwise_conv_sits_between_its_vpu_and_hbm_bounds_and_the_dense_conv(device, n, hw, c, k, stride):
    x = jax.ShapeDtypeStruct((n, hw, hw, c), jnp.float32)
    dw = tpusim.compile(_conv(c, stride), x, jax.ShapeDtypeStruct((k, k, 1, c), jnp.float32), device=device)
    dense = tpusim.compile(_conv(1, stride), x, jax.ShapeDtypeStruct((k, k, c, c), jnp.float32), device=device)
    kernel, t = _conv_kernel_time(dw)
    assert kernel.mxu.engine == "vpu" and t.mxu_flops == 0.0
    timer = timer_for(dw.chip)
    macs = n * (hw // stride) ** 2 * c * k * k
    vpu_bound = 2 * macs / timer.vpu_elems_per_s  # a multiply and an add per MAC, every lane busy
    hbm_bound = kernel.hbm_bytes / timer.bw  # at the rated bandwidth
    assert kernel.hbm_bytes >= 4 * n * hw * hw * c  # the input is read once, at least
    assert t.time_s >= max(vpu_bound, hbm_bound)
    assert t.time_s <= _conv_kernel_time(dense)[1].time_s


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 16), hw=st.integers(4, 64), c=st.integers(1, 400), k=st.sampled_from([1, 3, 5, 7]),
       stride=st.sampled_from([1, 2]), device=st.sampled_from(["v5e", "v4", "v6e"]))
def test_any_depthwise_conv_is_bounded_by_vpu_hbm_and_the_dense_conv(n, hw, c, k, stride, device):
    x = jax.ShapeDtypeStruct((n, hw, hw, c), jnp.float32)
    dw = tpusim.compile(_conv(c, stride), x, jax.ShapeDtypeStruct((k, k, 1, c), jnp.float32), device=device)
    kernel, t = _conv_kernel_time(dw)
    timer = timer_for(dw.chip)
    macs = n * (-(-hw // stride)) ** 2 * c * k * k
    assert t.time_s >= max(2 * macs / timer.vpu_elems_per_s, kernel.hbm_bytes / timer.bw)
    dense = tpusim.compile(_conv(1, stride), x, jax.ShapeDtypeStruct((k, k, c, c), jnp.float32), device=device)
    # Never above the dense conv, give or take how the two are cut into pipelined blocks (both
    # memory-bound, the same bytes): 10%.
    assert t.time_s <= _conv_kernel_time(dense)[1].time_s * 1.10


def test_depthwise_filter_and_input_gradients_match_jax():
    """JAX's filter gradient of a depthwise conv is a convolution with batch_group_count."""
    def loss(x, w):
        return jnp.sum(jnp.tanh(_conv(x.shape[-1])(x, w)) ** 2)

    grad = jax.grad(loss, argnums=(0, 1))
    x = np.random.RandomState(0).randn(4, 16, 16, 128).astype(np.float32)
    w = np.random.RandomState(1).randn(3, 3, 1, 128).astype(np.float32)
    compiled = tpusim.compile(grad, x, w, device="v5e")
    convs = [k for k in compiled.program.kernels if k.kind == "conv"]
    assert len(convs) == 3 and all(k.mxu.engine == "vpu" for k in convs)
    assert any(int(k.anchor.params["batch_group_count"]) == 128 for k in convs)
    got = compiled.run(x, w)
    assert relative_error(got, bf16_reference(grad, x, w)) < 1e-5  # the MXU inputs' bf16 rounding
    assert relative_error(got, grad(x, w)) < 2e-2


def test_a_depthwise_conv_with_few_channels_and_many_taps_takes_the_mxu_with_packed_groups():
    """35 channels, 7x7 taps: the VPU would run with most lanes idle, while all 35 groups fit
    one weight tile block-diagonally; the compiler picks the engine that issues less work."""
    x = np.random.RandomState(0).randn(4, 24, 24, 35).astype(np.float32)
    w = np.random.RandomState(1).randn(7, 7, 1, 35).astype(np.float32)
    compiled = tpusim.compile(_conv(35), x, w, device="v6e")
    kernel, _ = _conv_kernel_time(compiled)
    assert kernel.mxu.engine == "mxu" and kernel.mxu.groups_per_tile == 35
    assert relative_error(compiled.run(x, w), bf16_reference(_conv(35), x, w)) < 1e-5


def test_a_grouped_conv_packs_its_groups_into_weight_tiles():
    """8 groups of 16 channels share one 128 x 128 weight tile block-diagonally instead of
    padding each group to a whole array."""
    x = np.random.RandomState(0).randn(8, 28, 28, 128).astype(np.float32)
    w = np.random.RandomState(1).randn(3, 3, 16, 128).astype(np.float32)
    grouped = tpusim.compile(_conv(8), x, w, device="v5e")
    kernel, t = _conv_kernel_time(grouped)
    assert kernel.mxu.engine == "mxu" and kernel.mxu.groups_per_tile == 8 and kernel.mxu.batch == 1
    dense = tpusim.compile(_conv(1), x, jax.ShapeDtypeStruct((3, 3, 128, 128), jnp.float32), device="v5e")
    dense_kernel, dense_t = _conv_kernel_time(dense)
    # the same array work as the dense conv of the full width (the tiles may differ: each is
    # cut where the device model times it fastest)
    assert kernel.mxu.issued_flops <= dense_kernel.mxu.issued_flops
    assert t.mxu_s <= 1.1 * dense_t.mxu_s
    np.testing.assert_allclose(grouped.run(x, w), _conv(8)(x, w), rtol=2e-2, atol=2e-2 * 8)


def test_a_zero_pad_before_a_strided_conv_folds_into_the_conv():
    """Keras's ZeroPadding2D before a strided conv (MobileNet, EfficientNet) becomes the conv's
    own padding, as XLA's algebraic simplifier does: no padded copy is written."""
    inp = keras.Input((32, 32, 16))
    y = keras.layers.ZeroPadding2D(((0, 1), (0, 1)))(inp)
    y = keras.layers.DepthwiseConv2D(3, strides=2, padding="valid")(y)
    model = keras.Model(inp, y)
    x = np.random.RandomState(0).randn(2, 32, 32, 16).astype(np.float32)
    compiled = tpusim.compile(model, x, device="v5e")
    prims = {op.prim for k in compiled.program.kernels for op in
             (k.op.subgraphs["fused"].ops if k.op.prim == "fusion" else [k.op])}
    assert "pad" not in prims
    assert relative_error(compiled.run(x), bf16_reference(model, x)) < 1e-5


@pytest.mark.parametrize("device", ["v5e", "v4"])
def test_mobile_models_are_not_dominated_by_depthwise_kernels(device):
    """MobileNetV2, EfficientNetB0 and ConvNeXt-Tiny: no depthwise kernel takes longer than the
    dense convs and matmuls of its stage (the layers at its resolution) together, and depthwise
    kernels take well under half of the step (56-85% when each channel was a padded MXU pass)."""
    def resolution(k) -> int | None:
        shape = k.anchor.outputs[0].shape
        return shape[1] if len(shape) == 4 else None

    for make in (keras.applications.MobileNetV2, keras.applications.EfficientNetB0, keras.applications.ConvNeXtTiny):
        model = make(weights=None, input_shape=(224, 224, 3))
        compiled = tpusim.compile(model, jax.ShapeDtypeStruct((8, 224, 224, 3), np.float32), device=device)
        times = {t.name: t.time_s for t in compiled.estimate().ops}
        mxu = [k for k in compiled.program.kernels if k.mxu is not None]
        dw = [k for k in mxu if is_depthwise(k.anchor)]
        dense = [k for k in mxu if not is_depthwise(k.anchor)]
        assert dw, make.__name__
        for k in dw:
            stage = sum(times[d.name] for d in dense if resolution(d) == resolution(k))
            assert times[k.name] <= stage, (make.__name__, k.name)
        assert sum(times[k.name] for k in dw) < 0.45 * sum(times.values()), make.__name__


def test_depthwise_convs_are_memory_bound_on_a_gpu():
    x = jax.ShapeDtypeStruct((32, 56, 56, 144), jnp.float32)
    compiled = tpusim.compile(_conv(144), x, jax.ShapeDtypeStruct((3, 3, 1, 144), jnp.float32), device="h100")
    _, t = _conv_kernel_time(compiled)
    assert t.bound == "memory" and t.mxu_s == 0.0
