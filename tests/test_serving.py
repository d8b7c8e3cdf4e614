"""LLM serving: a Llama-shaped prefill and decode step that match JAX on one chip and
tensor-parallel on four, and the TTFT / TPOT / throughput tables against batch size."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

import tpusim
from tpusim.cli import app
from tpusim.errors import TpusimError
from tpusim.models import llama
from tpusim.serving import serve

SMALL = llama.LlamaConfig(layers=2, d_model=64, heads=8, kv_heads=4, d_ff=128, vocab=96)


@pytest.fixture(scope="module")
def small_run():
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: (rng.normal(size=s.shape) * 0.1).astype(np.float32),
                          llama.param_shapes(SMALL, jnp.float32))
    cache = np.zeros(llama.cache_shape(SMALL, 2, 8, jnp.float32).shape, np.float32)
    prompt = rng.integers(0, SMALL.vocab, (2, 5)).astype(np.int32)
    return params, cache, prompt


@pytest.mark.parametrize("device", ["v5e", "v5e-4"])
def test_prefill_then_decode_matches_jax(small_run, device):
    params, cache, prompt = small_run
    kw = {}
    if device != "v5e":
        specs, cache_spec = llama.tensor_parallel_specs()
        kw = {"mesh": {"model": 4}, "in_specs": (specs, cache_spec, cache_spec, None, None)}
    pre = tpusim.compile(llama.prefill(SMALL), params, cache, cache, prompt, np.int32(0), device=device, **kw)
    logits, ck, cv = pre.run(params, cache, cache, prompt, np.int32(0))
    nxt = np.argmax(logits[:, -1], -1)[:, None].astype(np.int32)
    dec = tpusim.compile(llama.decode_step(SMALL), params, ck, cv, nxt, np.int32(5), device=device, **kw)
    out, _, _ = dec.run(params, ck, cv, nxt, np.int32(5))
    ref, _, _ = jax.jit(llama.prefill(SMALL))(params, cache, cache, np.concatenate([prompt, nxt], 1), 0)
    np.testing.assert_allclose(out, ref, atol=2e-3)  # bf16 MXU inputs vs f32 JAX


def test_llama3_8b_serving_tables():
    for device in ("v5e-8", "v6e-8", "h100"):
        r = serve("llama3-8b", device, batches=[1, 32], prompt_len=512, gen_len=128)
        one, many = r.rows
        assert one.fits and many.fits
        n = 1 if device == "h100" else 8
        assert one.weights_gib == pytest.approx(llama.LLAMA3_8B.params * 2 / n / 2**30)
        # decode is weight-bound: 32 sequences cost far less than 32x one, so throughput rises
        assert one.tpot_s < many.tpot_s < 8 * one.tpot_s and many.tokens_per_s > 4 * one.tokens_per_s
        assert many.ttft_s > 8 * one.ttft_s  # prefill is compute-bound: it scales with the tokens
        assert many.kv_cache_gib == pytest.approx(32 * 640 * 2 * 32 * 8 * 128 * 2 / n / 2**30)
        assert r.largest_batch() == 32 and r.largest_batch(one.tpot_s * 1.01) == 1
        assert set(r.to_pandas().columns) >= {"ttft_s", "tpot_s", "tokens_per_s", "kv_cache_gib", "fits"}


def test_serving_mistakes():
    with pytest.raises(TpusimError, match="unknown model"):
        serve("gpt-5", "v5e")
    with pytest.raises(TpusimError, match="kv_heads"):
        serve("llama3-8b", "v5e-16")
    with pytest.raises(TpusimError, match="positive"):
        serve("llama3-8b", "v5e-8", batches=[0])
    runner = CliRunner()
    for bad in (["--batches", "1,x"], ["--model", "gpt5"], ["--device", "v9"], ["--prompt", "0"]):
        out = runner.invoke(app, ["serve", *bad])
        assert out.exit_code == 2 and "usage error" in out.output, (bad, out.output)


def test_serve_steps_takes_any_prefill_and_decode_functions():
    """A user's own LM (an embedding + one dense layer with a running state as its 'cache')."""
    from tpusim.serving import Steps, serve_steps

    V, D = 512, 256

    def prefill(w, state, tokens):
        h = jnp.tanh(w["emb"][tokens].sum(1) @ w["mix"])
        return h @ w["emb"].T, state + h

    def decode(w, state, tokens):
        h = jnp.tanh((w["emb"][tokens[:, 0]] + state) @ w["mix"])
        return h @ w["emb"].T, state + h

    w = {"emb": jax.ShapeDtypeStruct((V, D), jnp.float32), "mix": jax.ShapeDtypeStruct((D, D), jnp.float32)}

    def args(b):
        state = jax.ShapeDtypeStruct((b, D), jnp.float32)
        return (w, state, jax.ShapeDtypeStruct((b, 64), jnp.int32)), (w, state, jax.ShapeDtypeStruct((b, 1), jnp.int32))

    r = serve_steps(Steps(prefill, decode, args, donate=(1,)), "v5e", [1, 16], name="toy")
    assert [row.batch for row in r.rows] == [1, 16] and all(row.fits for row in r.rows)
    assert r.rows[1].kv_cache_gib == pytest.approx(16 * D * 4 / 2**30)
    assert r.rows[0].weights_gib == pytest.approx((V * D + D * D) * 4 / 2**30)


def test_classic_model_latency_against_batch():
    """The TPU v1 paper's MLP0 shape: weight-bound, so larger batches raise throughput at
    nearly the same latency (its paper's point: batch as large as the response-time limit lets)."""
    from tpusim.serving import latency_vs_batch

    ws = [jax.ShapeDtypeStruct((2000, 2000), jnp.float32)] * 5

    def mlp0(x, ws):
        for w in ws:
            x = jax.nn.relu(x @ w)
        return x

    r = latency_vs_batch(mlp0, jax.ShapeDtypeStruct((200, 2000), jnp.float32), ws, device="v1", batches=[16, 200, 4000])
    small, mid, big = r.rows
    assert small.items_per_s < mid.items_per_s < big.items_per_s
    assert mid.latency_s < 2 * small.latency_s and big.latency_s > mid.latency_s
    assert r.largest_batch() == 4000 and r.largest_batch(mid.latency_s * 1.01) == 200
    script = str(Path(__file__).parent.parent / "examples" / "mlp0_script.py")
    out = CliRunner().invoke(app, ["serve", "--script", script, "--device", "v1", "--batches",
                                   "16,200", "--latency-ms", "7"])
    assert out.exit_code == 0 and "largest batch within 7 ms: 200" in out.output, out.output
