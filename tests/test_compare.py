"""Choosing hardware: one model on several devices (time, fit, dollars, energy), the energy
model against Google's measured chip power, and the price table."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

import tpusim
from tpusim.cli import app
from tpusim.comparison import compare
from tpusim.errors import TpusimError
from tpusim.hardware.prices import price_of
from tpusim.models.zoo import classic_cnn, llama_train_step_shapes, lstm_text_model, vgg16_transfer

S = jax.ShapeDtypeStruct
SIX = ["v5e", "v6e", "v5p", "h100", "a100", "cpu"]
COLUMNS = {"chip", "chips", "step_s", "throughput", "mfu", "peak_hbm_gib", "hbm_gib", "fits", "fits_on", "usd_per_hour",
           "usd_per_million", "energy_j", "kwh_per_million", "average_w_per_chip", "price_source", "note"}


@pytest.mark.parametrize("make,arg", [(classic_cnn, S((128, 28, 28, 1), jnp.float32)),
                                      (lstm_text_model, S((64, 20), jnp.int32)),
                                      (vgg16_transfer, S((32, 224, 224, 3), jnp.float32))])
def test_source_document_models_on_six_devices(make, arg):
    frame = compare(make(), arg, devices=SIX).to_pandas()
    assert list(frame.index) == SIX and COLUMNS <= set(frame.columns)
    assert (frame.step_s > 0).all() and frame.fits.all()
    assert np.allclose(frame.throughput * frame.step_s, arg.shape[0])  # throughput is per second
    priced = frame.dropna(subset=["usd_per_hour"])
    assert set(priced.index) == {"v5e", "v6e", "v5p", "h100", "a100"}
    assert np.allclose(priced.usd_per_million, priced.usd_per_hour / 3600 * priced.step_s / arg.shape[0] * 1e6)
    # energy where a power figure is published (GPU board power), and said so where not
    assert frame.loc["h100", "energy_j"] > 0 and "no published power" in frame.loc["v5e", "note"]


def test_llama_step_compares_and_prices_can_be_overridden():
    fn, args = llama_train_step_shapes(layers=2, d_model=256, heads=4, kv_heads=2, d_ff=512, vocab=1024, seq=128,
                                       batch=8)
    c = compare(fn, *args, devices=SIX, items_per_step=8 * 128, unit="tokens",
                prices={"h100": 2.99}, donate_argnums=(0, 1))
    frame = c.sorted("usd_per_million").to_pandas()
    assert frame.loc["h100", "usd_per_hour"] == pytest.approx(2.99)
    priced = list(frame.usd_per_million.dropna())
    assert priced == sorted(priced) and np.isnan(frame.loc["cpu", "usd_per_million"])  # unpriced rows last
    assert list(frame.index)[-1] == "cpu"
    with pytest.raises(TpusimError, match="price override"):
        compare(fn, *args, devices=["h100"], prices={"h100": -1.0})


def test_a_model_that_does_not_fit_names_the_smallest_slice_that_does():
    """16 GiB of f32 weights: not on one 16 GiB v5e chip; v5e comes in 1, 4, 8, ... chips (a 2x2 is
    the next slice), and split over 4 it fits."""
    ws = [S((8192, 8192), jnp.float32)] * 64
    x = S((256, 8192), jnp.float32)

    def mlp(ws, x):
        for w in ws:
            x = jnp.tanh(x @ w)
        return x

    frame = compare(mlp, ws, x, devices=["v5e", "h100"]).to_pandas()
    assert not frame.loc["v5e", "fits"] and frame.loc["v5e", "fits_on"] == "v5e-4"
    assert frame.loc["h100", "fits"] and "needs" in frame.loc["v5e", "note"]


def _gemm_power(device: str) -> float:
    c = tpusim.compile(lambda a, b: a @ b, S((8192, 8192), jnp.bfloat16), S((8192, 8192), jnp.bfloat16), device=device)
    e = c.estimate()
    return e.energy.average_w / c.chip.device_fraction  # per chip


def test_busy_gemm_draws_between_googles_measured_mean_and_max():
    """Google Cloud's measured chip power (min/mean/max): v4 90/170/192 W, v3 123/220/262 W."""
    assert 170 <= _gemm_power("v4") <= 192
    assert 220 <= _gemm_power("v3") <= 262


def test_an_idle_chip_sits_near_the_measured_minimum():
    c = tpusim.compile(lambda x: x + 1, S((8,), jnp.float32), device="v4")
    assert c.estimate().energy.average_w == pytest.approx(90, rel=0.02)
    assert tpusim.compile(lambda x: x + 1, S((8,), jnp.float32), device="v5e").estimate().energy is None


def test_prices_are_dated_sourced_and_the_newest_on_demand_row_wins():
    h100 = price_of("h100")
    assert h100.kind == "on-demand" and h100.date >= "2026" and h100.source
    assert price_of("tpu7x") is None


def test_compare_command(tmp_path):
    runner = CliRunner()
    script = os.path.join(os.path.dirname(__file__), "..", "examples", "mlp_script.py")
    out = runner.invoke(app, ["compare", script, "--devices", "v5e,h100", "--json", "-", "--price", "h100=3"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert set(rows) == {"v5e", "h100"} and rows["h100"]["usd_per_hour"] == 3
    plot = tmp_path / "c.png"
    out = runner.invoke(app, ["compare", script, "--devices", "v5e,v4", "--plot", str(plot)])
    assert out.exit_code == 0 and plot.stat().st_size > 10_000 and "samples/s" in out.output
    for bad in (["--devices", "v5e,nope"], ["--sort", "speed"], ["--price", "h100=cheap"], ["--items-per-step", "-2"]):
        out = runner.invoke(app, ["compare", script, *bad])
        assert out.exit_code == 2 and "usage error" in out.output, (bad, out.output)
