"""Each compiler pass run on its own."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tpusim
from tpusim.compiler import allocate, assign_precision, canonicalize, emit_program, fuse, plan_mxu
from tpusim.compiler.layout import padded_bytes
from tpusim.compiler.tiling import mxu_block_vmem
from tpusim.frontend import lower, trace


def ir(fn, *args):
    return canonicalize(lower(trace(fn, *args).closed_jaxpr))


def kinds(graph):
    return [op.kind if op.prim == "fusion" else op.prim for op in graph.ops]


def fused_prims(op):
    return [o.prim for o in op.subgraphs["fused"].ops]


def test_bias_and_activation_fuse_into_matmul_epilogue():
    g = fuse(ir(lambda x, w, b: jax.nn.gelu(x @ w + b), jnp.ones((8, 16)), jnp.ones((16, 32)), jnp.ones(32)))
    assert kinds(g) == ["matmul"]
    prims = fused_prims(g.ops[0])
    assert prims[0] == "dot_general" and "add" in prims and "tanh" in prims


def test_batchnorm_relu_and_residual_fuse_into_conv():
    def block(x, w, mean, var, gamma, beta, shortcut):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = (y - mean) * jax.lax.rsqrt(var + 1e-3) * gamma + beta
        return jax.nn.relu(y + shortcut)

    args = [jnp.ones((1, 8, 8, 16)), jnp.ones((3, 3, 16, 16))] + [jnp.ones(16)] * 4 + [jnp.ones((1, 8, 8, 16))]
    g = fuse(ir(block, *args))
    assert kinds(g) == ["conv"]
    assert {"sub", "rsqrt", "mul", "add", "max"} <= set(fused_prims(g.ops[0]))


def _conv_bn_relu(x, w, gamma, beta):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    mean, var = jnp.mean(y, axis=(0, 1, 2)), jnp.var(y, axis=(0, 1, 2))
    return jax.nn.relu((y - mean) * jax.lax.rsqrt(var + 1e-3) * gamma + beta)


_BN_ARGS = [jnp.ones((8, 16, 16, 32)), jnp.ones((3, 3, 32, 64)), jnp.ones(64), jnp.ones(64)]


def test_batch_mean_is_reduced_in_the_conv_output_fusion():
    """XLA:TPU's convolution output fusions also emit reductions of the result tile, so
    training-mode batch norm reads the conv result back once (the variance), not twice."""
    g = fuse(ir(_conv_bn_relu, *_BN_ARGS))
    conv = next(op for op in g.ops if op.prim == "fusion" and op.kind == "conv")
    assert "reduce_sum" in fused_prims(conv)
    assert any(v.shape == (64,) for v in conv.outputs)
    product = conv.anchor.outputs[0]
    readers = [op for op in g.ops if op is not conv and any(v.size == product.size for v in op.inputs)]
    assert len(readers) == 2  # the variance pass and the normalization


def test_backward_kernels_leave_no_dead_work():
    """Every kernel of a batch-norm training gradient writes something someone reads, and the
    ReLU/BN gradient sums ride in the output fusions of the convolutions that make them."""
    def loss(x, w, gamma, beta):
        return jnp.sum(_conv_bn_relu(x, w, gamma, beta) ** 2)

    g = fuse(ir(jax.grad(loss, argnums=(1, 2, 3)), *_BN_ARGS))
    assert all(op.outputs for op in g.ops)
    mxu_reductions = [op for op in g.ops if op.prim == "fusion" and op.kind == "conv"
                      and "reduce_sum" in fused_prims(op)]
    assert mxu_reductions


def test_mixed_precision_stem_stores_no_mask_and_no_f32_gradient():
    """ResNet's stem (conv, batch norm, ReLU, max pool) trained under mixed_bfloat16, as XLA
    fuses it: the ReLU mask is remade in the backward kernel that reads the pre-activation anyway
    (never stored), and the f32 gradient that the conv and its bias gradient both cast to bf16 is
    written once, in bf16, by the kernel that makes it."""
    keras = pytest.importorskip("keras")
    from tpusim.validation.memory_programs import _keras_train

    def stem():
        i = keras.Input((32, 32, 3))
        x = keras.layers.Conv2D(64, 7, strides=2)(keras.layers.ZeroPadding2D(3)(i))
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
        x = keras.layers.MaxPooling2D(3, strides=2)(keras.layers.ZeroPadding2D(1)(x))
        return keras.Model(i, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x)))

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        p = _keras_train("stem", stem, 64, "sgd")()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    c = tpusim.compile(p.fn, *p.args, device="v4", donate_argnums=p.donate_argnums)
    made = {v.id for k in c.program.kernels for v in k.outputs}
    stored = {(str(v.dtype), v.shape) for k in c.program.kernels for v in k.inputs if v.id in made}
    assert ("bool", (64, 16, 16, 64)) not in stored
    assert ("float32", (64, 16, 16, 64)) not in stored
    assert ("bfloat16", (64, 16, 16, 64)) in stored
    # Stored activation-sized values: the conv's output and the batch-norm input gradient; the
    # gradient through the ReLU and the pool (a mask times a slice of the pool's padded
    # gradient) is remade by both kernels that need it, never written.
    sized = [v for k in c.program.kernels for v in k.outputs if v.shape == (64, 16, 16, 64)]
    assert len(sized) == 2, [k.name for k in c.program.kernels if any(v.shape == (64, 16, 16, 64) for v in k.outputs)]


def test_sibling_kernels_reading_one_array_read_it_once():
    """Two reductions of the same array that do not feed each other are one multi-output
    kernel (XLA's sibling fusion), so the array crosses HBM once."""
    x = jnp.ones((512, 1024))
    g = fuse(ir(lambda x, a, b: (jnp.sum(x * a, axis=0), jnp.sum(jnp.tanh(x) * b, axis=1)), x, x, x))
    assert kinds(g) == ["loop"]
    assert len(g.ops[0].outputs) == 2


def test_a_sibling_moves_up_past_a_kernel_that_needs_the_first():
    """Batch norm's statistics: the mean's sum, a small kernel using the mean, then a second
    sum of the same array that does not need the mean. The second sum moves up into the first
    kernel (the first cannot move down past its reader), so the array is read once."""
    x = jnp.ones((512, 1024))

    def f(x):
        mean = jnp.sum(x, axis=0) / 512
        return jnp.exp(mean), jnp.sum(x * x, axis=0)

    g = fuse(ir(f, x))
    readers = [op for op in g.ops if any(v.shape == (512, 1024) for v in op.inputs)]
    assert len(readers) == 1 and len(readers[0].outputs) == 2


def test_batch_norm_statistics_of_a_keras_conv_ride_in_its_output_fusion():
    """Keras's Conv2D (with its bias) -> BatchNormalization -> ReLU, trained under
    mixed_bfloat16: the conv kernel also takes the mean's sum over its finished (biased, bf16)
    result, as XLA's convolution output fusions do; then one kernel for the variance pass and
    one to normalize. No kernel re-reads the conv's result just to sum it."""
    keras = pytest.importorskip("keras")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        i = keras.Input((14, 14, 256))
        model = keras.Model(i, keras.layers.ReLU()(keras.layers.BatchNormalization()(keras.layers.Conv2D(512, 1)(i))))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]
    g = fuse(ir(lambda t, f, x: model.stateless_call(t, f, x, training=True)[0], trainable, frozen,
                jnp.ones((32, 14, 14, 256))))
    assert kinds(g) == ["conv", "loop", "loop"]
    assert "reduce_sum" in fused_prims(g.ops[0])


def test_elementwise_chain_is_one_kernel():
    g = fuse(ir(lambda x, y: jnp.exp(x * 2 + y) - jnp.tanh(y), jnp.ones((64, 128)), jnp.ones((64, 128))))
    assert kinds(g) == ["loop"]
    assert len(g.ops[0].outputs) == 1  # intermediates stay in VMEM


def test_softmax_splits_at_reductions():
    g = fuse(ir(lambda x: jax.nn.softmax(x), jnp.ones((64, 128))))
    assert kinds(g) == ["loop", "loop", "loop"]  # max | sub, exp, sum | divide


def test_gpu_normalization_is_one_kernel_when_its_rows_fit_the_registers():
    """XLA:GPU's Triton softmax keeps a row in registers (0.4 x 64K per block): softmax over
    4096 columns is one kernel reading its input once; over 32768 columns it splits as on a TPU."""
    from tpusim.sim.gpu_timing import XLA_GPU

    short = fuse(ir(lambda x: jax.nn.softmax(x), jnp.ones((64, 4096))), XLA_GPU)
    assert kinds(short) == ["loop"] and [v.shape for v in short.ops[0].inputs] == [(64, 4096)]
    long = fuse(ir(lambda x: jax.nn.softmax(x), jnp.ones((8, 32768))), XLA_GPU)
    assert kinds(long) == ["loop", "loop", "loop"]


def test_gpu_normalization_reads_a_masking_select_stored():
    """A causal mask's select is no op XLA:GPU's normalization fusion takes in front of its rows:
    a kernel of its own writes the masked f32 scores, which the softmax kernel reads."""
    from tpusim.sim.gpu_timing import XLA_GPU

    def masked_softmax(s):
        t = s.shape[-1]
        return jax.nn.softmax(jnp.where(jnp.tril(jnp.ones((t, t), bool)), s.astype(jnp.float32) * 0.1, -1e9))

    g = fuse(ir(masked_softmax, jnp.ones((4, 256, 256), jnp.bfloat16)), XLA_GPU)
    assert kinds(g) == ["loop", "loop"]
    assert "select_n" in fused_prims(g.ops[0]) and "select_n" not in fused_prims(g.ops[1])
    assert g.ops[1].inputs[0].dtype == np.float32 and g.ops[1].inputs[0].shape == (4, 256, 256)
    assert kinds(fuse(ir(masked_softmax, jnp.ones((4, 256, 256), jnp.bfloat16)))) == ["loop", "loop", "loop"]


def test_gpu_matmul_epilogue_is_what_cublas_applies():
    """cuBLAS scales, adds a bias and applies an activation on the result; a reduction of it is
    a kernel of its own (XLA:TPU computes it in the matmul's output fusion)."""
    from tpusim.sim.gpu_timing import XLA_GPU

    args = jnp.ones((256, 128)), jnp.ones((128, 512)), jnp.ones(512)
    dense = fuse(ir(lambda x, w, b: jax.nn.relu(x @ w + b), *args), XLA_GPU)
    assert kinds(dense) == ["matmul"] and {"add", "max"} <= set(fused_prims(dense.ops[0]))
    stats = ir(lambda x, w, b: (x @ w + b).sum(0), *args)
    assert kinds(fuse(stats, XLA_GPU)) == ["matmul", "loop"]
    assert kinds(fuse(stats)) == ["matmul"]


def test_canonicalize_makes_a_transpose_of_unit_axes_a_reshape():
    g = ir(lambda x: jnp.transpose(x, (0, 2, 1, 3)) + 1, jnp.ones((4, 1, 8, 16)))
    assert [op.prim for op in g.ops] == ["reshape", "add"]
    g = ir(lambda x: jnp.transpose(x, (0, 2, 1)) + 1, jnp.ones((4, 2, 8)))
    assert [op.prim for op in g.ops] == ["transpose", "add"]


def test_fusion_leaves_input_graph_untouched():
    graph = ir(lambda x: jax.lax.scan(lambda c, _: (c * 2 + 1, None), x, None, length=4)[0], jnp.ones(3))
    body_before = list(graph.ops[0].subgraphs["body"].ops)
    fuse(graph)
    assert graph.ops[0].subgraphs["body"].ops == body_before


def test_canonicalize_drops_identities_and_dead_code():
    def f(x):
        unused = jnp.sin(x) * 3  # noqa: F841
        return jax.lax.stop_gradient(x.reshape(4, 4)) + 1

    g = ir(f, jnp.ones((4, 4)))
    assert [op.prim for op in g.ops] == ["add"]


@pytest.mark.parametrize("precision,dtype,expected", [
    ("default", jnp.float32, "bf16"), ("high", jnp.float32, "bf16_3x"), ("highest", jnp.float32, "bf16_6x"),
    ("highest", jnp.bfloat16, "bf16"), ("default", jnp.int32, "int"),
])
def test_precision_assignment(precision, dtype, expected):
    g = assign_precision(ir(lambda a, b: a @ b, jnp.ones((4, 4), dtype), jnp.ones((4, 4), dtype)), precision)
    assert g.ops[0].params["mxu_precision"] == expected


def test_per_op_precision_request_is_honoured():
    fn = lambda a, b: jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST)  # noqa: E731
    g = assign_precision(ir(fn, jnp.ones((4, 4)), jnp.ones((4, 4))), "default")
    assert g.ops[0].params["mxu_precision"] == "bf16_6x"


def test_tpu_v1_uses_int8():
    g = assign_precision(ir(lambda a, b: a @ b, jnp.ones((4, 4)), jnp.ones((4, 4))), "default", "int8")
    assert g.ops[0].params["mxu_precision"] == "int8"


@pytest.mark.parametrize("budget_mib", [0.5, 4, 16])
def test_tiles_respect_the_vmem_budget(budget_mib):
    g = assign_precision(ir(lambda a, b: a @ b, jnp.ones((4096, 4096)), jnp.ones((4096, 4096))))
    plan = plan_mxu(g.ops[0], (128, 128), int(budget_mib * 2**20))
    assert plan.vmem_bytes <= budget_mib * 2**20
    assert plan.tk % 128 == 0 and plan.tn % 128 == 0 and plan.tm % 16 == 0
    assert plan.vmem_bytes == mxu_block_vmem(plan.tm, plan.tk, plan.tn, 4, 4)  # f32 blocks are DMAd, converted in VMEM


def test_bigger_vmem_means_less_hbm_traffic():
    g = assign_precision(ir(lambda a, b: a @ b, jnp.ones((4096, 4096)), jnp.ones((4096, 4096))))
    small = emit_program(fuse(g), (128, 128), 2**20).kernels[0].hbm_bytes
    large = emit_program(fuse(g), (128, 128), 64 * 2**20).kernels[0].hbm_bytes
    assert large < small


def test_layout_padding():
    assert padded_bytes((1000, 3), np.float32) == 1000 * 128 * 4 or padded_bytes((1000, 3), np.float32) == 8 * 1024 * 4
    assert padded_bytes((8, 128), np.float32) == 8 * 128 * 4
    assert padded_bytes((1, 128), jnp.bfloat16) == 16 * 128 * 2  # bf16 tiles are (16, 128)
    assert padded_bytes((32, 26, 26, 3), np.float32) > 32 * 26 * 26 * 3 * 4


def test_allocation_reuses_memory_of_dead_buffers():
    def chain(x):
        for _ in range(6):
            x = jnp.tanh(x @ x)
        return x

    c = tpusim.compile(chain, jnp.ones((512, 512)))
    buf = padded_bytes((512, 512), np.float32)
    assert c.program.peak_live_bytes <= 3 * buf  # input + two live temporaries, not seven
    assert c.peak_hbm_bytes >= c.program.peak_live_bytes


def test_out_of_memory_lists_live_buffers():
    big = jax.ShapeDtypeStruct((40000, 40000), jnp.float32)  # 6.4 GB each; v5e has 16 GiB
    with pytest.raises(tpusim.OutOfMemoryError) as e:
        tpusim.compile(lambda a, b: (a @ b) @ a, big, big, device="v5e")
    msg = str(e.value)
    assert "GiB" in msg and "input arg0" in msg and "v5e" in msg
    assert e.value.peak_bytes > e.value.capacity_bytes
    tpusim.compile(lambda a, b: (a @ b) @ a, big, big, device="v5p")  # 95 GiB: fits


def test_keras_parameters_are_accounted(rng):
    from tpusim.models import classic_cnn

    model = classic_cnn()
    c = tpusim.compile(model, np.zeros((1, 28, 28, 1), np.float32))
    param_bytes = sum(int(np.prod(v.shape)) * 4 for v in model.weights)
    assert sum(v.nbytes for v in c.program.params) == param_bytes
    assert c.peak_hbm_bytes > param_bytes


def test_allocate_alone_on_a_program():
    g = fuse(assign_precision(ir(lambda x: jnp.exp(x) + 1, jnp.ones((8, 128)))))
    prog = allocate(emit_program(g, (128, 128), 2**20))
    assert prog.peak_hbm_bytes == 2 * 8 * 128 * 4  # input and output
