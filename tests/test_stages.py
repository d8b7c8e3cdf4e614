"""Stages as jax.stages has them: trace and lower once with no device, then compile the one
Lowered for many devices, each compile running only the device-dependent passes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tpusim
import tpusim.api as api
from tpusim.errors import TpusimError


def _mlp(w1, w2, x):
    return jax.nn.relu(x @ w1) @ w2


ARGS = (jnp.ones((256, 512)), jnp.ones((512, 128)), jnp.ones((64, 256)))


def test_one_lowering_compiles_for_many_devices_as_compile_does():
    lowered = tpusim.jit(_mlp).trace(*ARGS).lower()
    ir_before = lowered.as_text("ir")
    for device in ("v5e", "v4", "h100", "v5e-4", "cpu"):
        shared, alone = lowered.compile(device), tpusim.compile(_mlp, *ARGS, device=device)
        assert shared.estimate().time_s == alone.estimate().time_s
        assert shared.peak_hbm_bytes == alone.peak_hbm_bytes
    # compiling ran the passes on copies: the shared IR is as it was lowered
    assert lowered.as_text("ir") == ir_before
    compiled = lowered.compile("v4", precision="highest")
    assert np.allclose(compiled.run(*ARGS), _mlp(*ARGS), rtol=1e-5)


def test_ids_are_numbered_per_lowering():
    """The same function prints the same IR whatever the process lowered before, and a compile's
    new values follow the lowered ids without reusing one."""
    first = tpusim.jit(_mlp).lower(*ARGS)
    tpusim.compile(_mlp, *ARGS, device="v5e")  # makes many values in between
    again = tpusim.jit(_mlp).lower(*ARGS)
    assert again.as_text("ir") == first.as_text("ir")
    a, b = first.compile("v5e-4"), again.compile("v5e-4")
    assert a.as_text("fuse") == b.as_text("fuse") and a.as_text() == b.as_text()
    lowered_ids = {v.id for op in first.graph.walk() for v in op.outputs}
    made = {id(v): v for op in a.after_pass["fuse"].walk() for v in op.outputs if v.id not in lowered_ids}
    assert made and min(v.id for v in made.values()) > max(lowered_ids)
    assert len({v.id for v in made.values()}) == len(made)


def test_lowered_counts_need_no_device():
    lowered = tpusim.jit(_mlp).lower(*ARGS)
    assert lowered.cost_analysis()["flops"] == 2 * 64 * 256 * 512 + 64 * 512 + 2 * 64 * 512 * 128  # two GEMMs, a ReLU
    assert "dot_general" in lowered.as_text("jaxpr")
    with pytest.raises(TpusimError, match="'jaxpr' or 'ir'"):
        lowered.as_text("program")


def test_compare_traces_and_lowers_once(monkeypatch):
    calls = []
    original = api.trace

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(api, "trace", counting)
    frame = tpusim.compare(_mlp, *ARGS, devices=["v5e", "v6e", "v4", "h100", "a100", "v5e-4"]).to_pandas()
    assert len(frame) == 6 and (frame.step_s > 0).all()
    assert len(calls) == 1


def test_a_function_naming_mesh_axes_is_traced_under_each_slices_mesh():
    from jax.sharding import PartitionSpec as P

    def f(x):
        return jax.lax.with_sharding_constraint(x * 2, P("data"))

    lowered = tpusim.jit(f).lower(jnp.ones((16, 128)), mesh={"data": 4})
    assert lowered.compile("v5e-4").distribution.devices == 4
    assert lowered.compile("v5e-8").distribution.devices == 8  # traced again under 8 devices


def test_bad_options_fail_before_any_pass():
    lowered = tpusim.jit(_mlp).lower(*ARGS)
    with pytest.raises(TpusimError, match="precision"):
        lowered.compile("v5e", precision="fp4")
    with pytest.raises(TpusimError, match="attention"):
        lowered.compile("v5e", attention="paged")


def test_memory_analysis_splits_the_peak_as_jax_does():
    def step(w, x):
        return w - 0.1 * jax.grad(lambda w: jnp.sum(jnp.tanh(x @ w) ** 2))(w)

    w, x = jnp.ones((1024, 1024)), jnp.ones((256, 1024))
    kept = tpusim.compile(step, w, x, device="v5e").memory_analysis()
    donated = tpusim.compile(step, w, x, device="v5e", donate_argnums=0).memory_analysis()
    assert kept.argument_size_in_bytes == donated.argument_size_in_bytes == (1024 + 256) * 1024 * 4
    assert kept.output_size_in_bytes == 1024 * 1024 * 4 and kept.alias_size_in_bytes == 0
    assert donated.alias_size_in_bytes == 1024 * 1024 * 4
    for m in (kept, donated):
        assert m.temp_size_in_bytes > 0  # the gradient and tanh's output
        assert m.peak_memory_in_bytes == (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                                          + m.temp_size_in_bytes)


def test_estimate_takes_other_constants_without_replacing_the_default():
    from dataclasses import replace

    from tpusim.sim.device_timer import DEFAULT_CONSTANTS

    compiled = tpusim.compile(jnp.tanh, jnp.ones((4096, 4096)), device="v5e")
    default = compiled.estimate()
    slower = compiled.estimate(replace(DEFAULT_CONSTANTS, transcendental_cost=100.0))
    assert slower.time_s > default.time_s
    assert compiled.estimate() is default


def test_a_mesh_that_is_neither_a_dict_nor_a_mesh_is_refused_before_tracing():
    with pytest.raises(TpusimError, match="axis sizes as a dict"):
        tpusim.jit(_mlp).lower(*ARGS, mesh=["data", 4])


def test_ir_after_each_named_pass_is_kept_and_dumped_on_request(monkeypatch, capsys):
    """The pipeline keeps the graph each named pass returns (`as_text(<pass>)`), and
    TPUSIM_DUMP_IR_AFTER prints it as the compile runs, as XLA's pass dumps do."""
    fn = lambda x: jax.lax.stop_gradient(jnp.exp(x)) * 2  # noqa: E731 (stop_gradient: an identity)
    monkeypatch.setenv("TPUSIM_DUMP_IR_AFTER", "canonicalize")
    compiled = tpusim.compile(fn, jnp.ones((8, 128)))
    assert "stop_gradient" in compiled.as_text("lowered") and "stop_gradient" not in compiled.as_text("canonicalize")
    assert "fusion" in compiled.as_text("fuse") and compiled.as_text("fused") == compiled.as_text("fuse")
    dumped = capsys.readouterr().err
    assert "// tpusim IR after canonicalize" in dumped and "// tpusim IR after fuse" not in dumped
    with pytest.raises(TpusimError, match="'assign_precision'"):
        compiled.as_text("no_such_pass")
    monkeypatch.setenv("TPUSIM_DUMP_IR_AFTER", "fusion")  # a misspelt pass name says so
    with pytest.raises(TpusimError, match="names no pass.*fuse"):
        tpusim.compile(fn, jnp.ones((8, 128)))


def test_the_verifier_names_the_pass_that_broke_the_ir():
    from tpusim.ir.graph import Graph, Op, Value
    from tpusim.ir.verify import IRVerificationError, verify_graph

    x, stray, y = Value((4,), np.float32, "input"), Value((4,), np.float32), Value((4,), np.float32)
    broken = Graph([x], [y], [Op("add", [x, stray], [y], {})])
    with pytest.raises(IRVerificationError, match=r"(?s)after pass .fuse.*reads .* before anything defines it"):
        verify_graph(broken, after="fuse")
    twice = Graph([x], [y], [Op("neg", [x], [y], {}), Op("exp", [y], [y], {})])
    with pytest.raises(IRVerificationError, match="defines .* again"):
        verify_graph(twice)
    with pytest.raises(IRVerificationError, match="'cholesky' has no entry"):
        verify_graph(Graph([x], [y], [Op("cholesky", [x], [y], {})]))
    verify_graph(Graph([x], [y], [Op("neg", [x], [y], {})]))  # a well-formed graph passes
