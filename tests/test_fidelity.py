"""Single-chip fidelity: defects found against measured TPUs, each pinned by a test, and the
measured-kernel validation with its stated fit subsets."""

import math
import random
from statistics import median

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tpusim
from tpusim.sim.calibration import calibration_for
from tpusim.validation import kernels


def _mm(m, k, n, dtype=jnp.bfloat16, epilogue=None):
    a, b = jax.ShapeDtypeStruct((m, k), dtype), jax.ShapeDtypeStruct((k, n), dtype)
    fn = (lambda x, y: x @ y) if epilogue is None else (lambda x, y: epilogue(x @ y))
    return fn, a, b


def test_fused_epilogue_writes_the_output_once():
    """bf16 [8192,256] @ [256,8192]: a ReLU in the epilogue must not add a second output write."""
    plain = tpusim.compile(*_mm(8192, 256, 8192), device="v4").cost_analysis()["bytes accessed"]
    relu = tpusim.compile(*_mm(8192, 256, 8192, epilogue=jax.nn.relu), device="v4").cost_analysis()["bytes accessed"]
    ideal = 2 * (2 * 8192 * 256) + 2 * 8192 * 8192
    assert relu == plain
    assert plain <= 1.5 * ideal  # operand re-reads of VMEM-sized blocks, never a second output


@pytest.mark.parametrize("device,dtype,label", [("v5e", jnp.int8, "int8 peak"), ("v6e", jnp.int8, "int8 peak"),
                                                ("tpu7x", jnp.float8_e4m3fn, "fp8 peak")])
def test_narrow_types_run_at_their_published_peak(device, dtype, label):
    narrow = tpusim.compile(*_mm(8192, 8192, 8192, dtype), device=device).estimate()
    wide = tpusim.compile(*_mm(8192, 8192, 8192), device=device).estimate()
    assert narrow.ops[0].rate == label
    assert wide.ops[0].time_s / narrow.ops[0].time_s == pytest.approx(2.0, rel=0.1)


def test_int8_on_v4_and_int8_on_tpu7x_run_at_the_bf16_rate():
    for device in ("v4", "tpu7x"):
        narrow = tpusim.compile(*_mm(4096, 4096, 4096, jnp.int8), device=device).estimate()
        wide = tpusim.compile(*_mm(4096, 4096, 4096), device=device).estimate()
        assert narrow.ops[0].mxu_s == pytest.approx(wide.ops[0].mxu_s, rel=0.01)


def test_megacore_needs_a_block_per_core():
    """v4: a one-block kernel runs on one TensorCore; a large matmul is split over both."""
    small = tpusim.compile(lambda x: x + 1, jax.ShapeDtypeStruct((256, 256), jnp.float32), device="v4").estimate()
    big = tpusim.compile(*_mm(4096, 4096, 4096), device="v4").estimate()
    assert small.ops[0].cores == 1 and big.ops[0].cores == 2
    # the tiler gives each core a block even where one block would fit VMEM
    mid = tpusim.compile(*_mm(1024, 1024, 128, jnp.float16), device="v4")
    assert mid.kernels[0].mxu.grid[0] * mid.kernels[0].mxu.grid[1] >= 2


def test_a_partial_last_block_is_not_charged_as_a_whole_one():
    """N = 2560 in blocks of 1024 masks the last block: MXU time scales with 2560, not 3072."""
    t = {n: tpusim.compile(*_mm(4096, 4096, n), device="v4").estimate().ops[0].mxu_s for n in (2560, 3072)}
    assert t[2560] / t[3072] == pytest.approx(2560 / 3072, rel=0.03)


def test_megacore_cores_pipeline_only_their_own_blocks():
    """A two-block matmul on v4 is one block per TensorCore: no grid-step overhead, no pipeline."""
    from tpusim.hardware.chip import resolve_device
    from tpusim.sim.timing import TensorCoreTimer

    kernel = tpusim.compile(*_mm(1024, 1024, 1024), device="v4").kernels[0]
    timer = TensorCoreTimer(resolve_device("v4"))
    blocks = kernel.mxu.grid[0] * kernel.mxu.grid[1] * kernel.mxu.grid[2]
    assert timer.steps_per_core(kernel, 2) == math.ceil(kernel.mxu.grid[0] * kernel.mxu.grid[1] / 2) * kernel.mxu.grid[2]
    assert timer.steps_per_core(kernel, 1) == blocks


def test_pooling_streams_in_pipelined_blocks():
    """A large reduce-window is cut into blocks whose DMA overlaps the work (it used to be one
    block: read everything, pool, write everything)."""
    x = jax.ShapeDtypeStruct((64, 128, 56, 56), jnp.float16)
    pool = lambda v: jax.lax.reduce_window(v, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")  # noqa: E731
    compiled = tpusim.compile(pool, x, device="v4")
    op = compiled.estimate().ops[0]
    assert compiled.kernels[0].grid[0] > 4
    assert op.time_s < 0.8 * (op.dma_s + op.vpu_s)


def test_a_reduction_over_lanes_pays_the_permute_unit():
    """Summing over the minor (lane) dim needs a cross-lane reduce per vreg; over a major dim it
    is plain VPU adds across vregs. Same bytes, so only the vector time differs."""
    x = jax.ShapeDtypeStruct((4096, 4096), jnp.float32)
    lanes = tpusim.compile(lambda v: v.sum(1), x, device="v4").estimate().ops[0]
    rows = tpusim.compile(lambda v: v.sum(0), x, device="v4").estimate().ops[0]
    assert lanes.vpu_s > 2 * rows.vpu_s and lanes.dma_s == pytest.approx(rows.dma_s, rel=0.05)


def test_layer_norm_does_not_store_x_minus_mean():
    """XLA recomputes the centred input in the normalizing kernel instead of writing it to HBM."""
    def layer_norm(x):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / jnp.sqrt(var + 1e-5)

    x = np.random.default_rng(0).standard_normal((4, 256, 1024)).astype(np.float32)
    compiled = tpusim.compile(layer_norm, x, device="v4")
    full = x.size
    assert all(o.size < full for k in compiled.kernels for o in k.outputs if o not in compiled.program.outputs)
    np.testing.assert_allclose(compiled.run(x), jax.jit(layer_norm)(x), rtol=1e-5, atol=1e-5)


def test_explicit_copy_of_an_input_is_a_kernel():
    compiled = tpusim.compile(jnp.copy, jax.ShapeDtypeStruct((1 << 20,), jnp.bfloat16), device="tpu7x")
    assert len(compiled.kernels) == 1 and compiled.kernels[0].hbm_bytes == 2 * 2 * (1 << 20)


def test_pooling_along_lanes_pays_the_permute_unit():
    """NCHW max pooling (window over the minor dim) is bounded by cross-lane work, not HBM."""
    x = jax.ShapeDtypeStruct((1, 128, 512, 512), jnp.float16)
    pool = lambda v: jax.lax.reduce_window(v, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")  # noqa: E731
    op = tpusim.compile(pool, x, device="v4").estimate().ops[0]
    assert op.vpu_s > op.dma_s and op.bound == "vector"


# ---- measured kernels ------------------------------------------------------------------------
def _sample(per_family: int = 60, seed: int = 0) -> list[kernels.Row]:
    rng = random.Random(seed)
    by: dict[str, list[kernels.Row]] = {}
    for r in kernels.measured_rows():
        if kernels.fit_role(r) is None:
            by.setdefault(r.family, []).append(r)
    return [r for rows in by.values() for r in rng.sample(rows, min(per_family, len(rows)))]


def test_measured_rows_cover_three_generations_with_sources():
    rows = kernels.measured_rows()
    assert len(rows) >= 500
    assert {r.chip for r in rows} >= {"v4", "v6e", "tpu7x"}
    assert all(r.source and r.measured_s > 0 for r in rows)
    for gen, const, text, pred in kernels.FIT_SUBSETS:
        assert any(r.chip == gen and pred(r) for r in rows), (gen, const, text)


def test_held_out_kernels_by_family():
    """Held-out median |error| on a fixed sample: vector ops within 15% (the issue's bar);
    v4 float16 GEMMs near the 10% bar (the whole held-out family is within it: `tpusim
    validate`; a 60-row sample scatters by a point or two)."""
    results = kernels.evaluate(_sample())
    by: dict[str, list[float]] = {}
    for r in results:
        by.setdefault(r.row.family, []).append(abs(r.error))
    vector = [e for fam, es in by.items() if fam.startswith("v4 ") and "GEMM" not in fam for e in es]
    assert median(vector) <= 0.15
    # Norm kernels stream tens of MB: they need both megacore TensorCores and a pipeline whose
    # fill is a small block (one core and 8 MiB blocks put them at +27%).
    assert median(by["v4 norm"]) <= 0.15
    assert median(by["v4 GEMM f16"]) <= 0.12
    assert median(by["tpu7x GEMM bf16"]) <= 0.15
    assert median(by["tpu7x HBM copy"]) <= 0.15


def test_v4_float16_gemms_held_out_within_10_percent():
    """The issue's bar on every held-out v4 GEMM (float16 operands converted to bf16 on the VPU
    each time a block is fed; nothing fitted on these rows)."""
    rows = [r for r in kernels.measured_rows() if r.family == "v4 GEMM f16" and kernels.fit_role(r) is None]
    assert len(rows) >= 1500
    assert median(abs(r.error) for r in kernels.evaluate(rows)) <= 0.10


def test_float16_conversion_follows_the_tiles_that_feed_the_mxu():
    """A v4 f16 GEMM pays VPU conversion per operand block fed: forcing narrower N blocks (the
    lhs re-fed more often) costs more than the bf16 GEMM of the same tiles, and a bf16 GEMM
    pays none."""
    from tpusim.sim.estimate import timer_for

    def mxu_parts(dtype, tiles):
        c = tpusim.compile(*_mm(1024, 1024, 1024, dtype), device="v4", tiles=tiles)
        k = next(k for k in c.kernels if k.mxu is not None)
        timer = timer_for(tpusim.resolve_device("v4"))
        return timer.f16_convert_seconds(k.mxu, 2), timer.mxu_seconds(k.mxu, 2)

    wide, _ = mxu_parts(jnp.float16, (1024, 1024, 512))
    narrow, _ = mxu_parts(jnp.float16, (1024, 1024, 128))
    assert narrow > 2 * wide > 0
    assert mxu_parts(jnp.bfloat16, (1024, 1024, 128))[0] == 0.0


@pytest.mark.parametrize("device,shape", [("v6e", (2048, 2048, 2048)), ("v4", (1024, 1024, 1024)),
                                          ("tpu7x", (4096, 128, 4096)), ("v5e", (32, 4096, 4096))])
def test_the_tiler_keeps_the_blocks_the_device_model_times_fastest(device, shape):
    """Tile choice asks the timing model (`matmul_seconds`): no block shape forced by hand is
    faster in that model than the one the compiler picked, and on a chip without CMEM the
    kernel is then timed at exactly what the tiler was told."""
    from tpusim.sim.estimate import timer_for

    timer = timer_for(tpusim.resolve_device(device))

    def plan_time(tiles):
        c = tpusim.compile(*_mm(*shape), device=device, tiles=tiles)
        k = next(k for k in c.kernels if k.mxu is not None)
        return timer.matmul_seconds(k.mxu, k.hbm_bytes), k

    chosen, kernel = plan_time(None)
    for tiles in [(16, 128, 128), (512, 512, 512), (256, 2048, 256), shape, (shape[0], 256, shape[2])]:
        assert plan_time(tiles)[0] >= chosen * (1 - 1e-9), tiles
    if device != "v4":
        assert timer.time_kernel(kernel).time_s == pytest.approx(chosen, rel=1e-9)


def test_a_matmul_pipeline_fills_with_its_first_blocks():
    """Several grid steps overlap DMA and MXU, but the MXU waits for the first operand blocks and
    the last output block leaves after it: a K-split GEMM costs at least its steady engine time
    plus those blocks' DMA, and one step costs DMA plus MXU in full."""
    from tpusim.sim.estimate import timer_for

    timer = timer_for(tpusim.resolve_device("v6e"))
    c = tpusim.compile(*_mm(2048, 2048, 2048), device="v6e", tiles=(2048, 256, 2048))
    k = next(k for k in c.kernels if k.mxu is not None)
    t = timer.time_kernel(k)
    first = (2048 * 256 + 256 * 2048) * 2 + 2048 * 2048 * 2
    assert k.mxu.first_step_bytes == first
    assert t.time_s >= max(t.mxu_s, t.dma_s) + timer.dma_seconds(first)
    one = timer.time_kernel(next(k for k in tpusim.compile(*_mm(2048, 2048, 2048), device="v6e",
                                                          tiles=(2048, 2048, 2048)).kernels if k.mxu is not None))
    assert one.time_s == pytest.approx(one.overhead_s + max(one.mxu_s, one.dma_s), rel=1e-9)
    assert one.overhead_s >= min(one.mxu_s, one.dma_s)


def test_calibration_file_is_the_fit_on_its_stated_subsets():
    fitted = kernels.fit()
    for gen, cal in fitted.items():
        shipped = calibration_for(gen)
        for const in {c for g, c, _, _ in kernels.FIT_SUBSETS if g == gen}:
            assert math.isclose(getattr(cal, const), getattr(shipped, const), rel_tol=0.05), (gen, const)


def test_checkpoint_name_with_a_name_based_remat_policy():
    """`checkpoint_name` (the `name` primitive) compiles, so name-based remat policies work."""
    from jax.ad_checkpoint import checkpoint_name

    def layer(w, x):
        h = checkpoint_name(jnp.tanh(x @ w), "hidden")
        return jnp.sum(h @ w.T)

    policy = jax.checkpoint_policies.save_only_these_names("hidden")
    step = jax.grad(jax.checkpoint(layer, policy=policy))
    rng = np.random.default_rng(0)
    w, x = rng.standard_normal((64, 64)).astype(np.float32), rng.standard_normal((16, 64)).astype(np.float32)
    got = tpusim.compile(step, w, x, device="v4").run(w, x)
    from tpusim.reference import bf16_reference, relative_error

    assert relative_error(got, bf16_reference(step, w, x)) < 1e-5


def test_strided_conv_input_gradient_skips_the_dilation_rows():
    """The input gradient of a 1x1 stride-2 conv is a conv over the output gradient dilated 2x2:
    XLA:TPU skips the rows of inserted zeros along the major spatial dim (its estimated cycles
    for ResNet-50's projection shortcuts are about twice the forward conv's, not 4x), while the
    holes inside each streamed row are multiplied. Numerics stay JAX's."""
    def loss(x, w):
        y = jax.lax.conv_general_dilated(x, w, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return (y.astype(jnp.float32) ** 2).sum()

    x = jax.ShapeDtypeStruct((8, 28, 28, 256), jnp.bfloat16)
    w = jax.ShapeDtypeStruct((1, 1, 256, 512), jnp.bfloat16)
    compiled = tpusim.compile(jax.grad(loss), x, w, device="v4")
    convs = [k for k in compiled.kernels if k.mxu is not None]
    forward = next(k for k in convs if k.mxu.M == 8 * 14 * 14 and k.mxu.K == 256)
    grad_x = next(k for k in convs if k.mxu.K == 512)
    assert grad_x.mxu.M == 8 * 14 * 28  # 14 of 28 output rows meet real data, every column streams
    assert grad_x.mxu.useful_flops == 2 * forward.mxu.useful_flops
    rng = np.random.default_rng(0)
    xv = rng.normal(size=x.shape).astype(jnp.bfloat16)
    wv = (rng.normal(size=w.shape) * 0.05).astype(jnp.bfloat16)
    np.testing.assert_allclose(np.asarray(compiled.run(xv, wv), np.float32),
                               np.asarray(jax.jit(jax.grad(loss))(xv, wv), np.float32), rtol=0.05, atol=0.05)
