"""The HTML report: its data against the compiled program, the CLI, and (when Debian's chromium
and Playwright are installed) the page rendered in headless Chromium."""

import io
import json
import re
import shutil

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from typer.testing import CliRunner

import tpusim
from tpusim.cli import app
from tpusim.report.learner import DEMO_ARRAY, _as_matrices, first_mxu_kernel, systolic_demo
from tpusim.report.report_data import report_data
from tpusim.sim.mxu import to_bf16_f32

runner = CliRunner()


def _cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
                             keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dense(10, name="head")])


@pytest.fixture(scope="module")
def cnn():
    model = _cnn()
    x = np.random.default_rng(1).standard_normal((4, 16, 16, 3)).astype(np.float32)
    return model, x, tpusim.compile(model, x, device="v5e")


def test_report_data_matches_the_program(cnn):
    model, x, compiled = cnn
    data = report_data(compiled, [x])
    est = compiled.estimate()
    assert data["overview"]["step_us"] == pytest.approx(est.time_s * 1e6)
    assert len(data["kernels"]) == len(est.ops)
    for k, op in zip(data["kernels"], est.ops):
        ideal = max(op.flops / est.peak_flops, op.bytes / est.hbm_bandwidth)
        assert k["wasted_us"] == pytest.approx(max(0.0, op.time_s - ideal) * 1e6)
    mem = data["memory"]
    assert max(mem["total"]) == compiled.program.peak_live_bytes
    assert [sum(col) for col in zip(*mem["by_kind"].values())] == mem["total"]
    assert sum(mem["peak_by_kind"].values()) == mem["total"][mem["peak_index"]]
    assert {"parameters", "inputs"} <= set(mem["by_kind"])
    # every kernel is attributed to a Keras layer, and every source row points at kernels
    assert {s["key"] for s in data["sources"]} >= {"conv", "head"}
    assert sorted(i for s in data["sources"] for i in s["kernels"]) == list(range(len(est.ops)))
    json.dumps(data, allow_nan=False)  # embeddable as it is


def test_systolic_demo_is_a_real_corner_of_the_models_conv(cnn):
    model, x, compiled = cnn
    demo = systolic_demo(compiled.program, [x])
    a_full, w_full = demo.pop("operands")
    # the conv as a matmul (patches x filter) is the layer's real pre-activation output
    conv = jax.lax.conv_general_dilated(x, model.layers[0].kernel.numpy(), (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest")
    np.testing.assert_allclose(a_full @ w_full, np.asarray(conv)[0].reshape(-1, 8), atol=1e-5)  # the first image
    # the cycle-by-cycle array computes the bf16-input product of the rows and columns it shows
    a = a_full[demo["rows"], :demo["k"]]
    w = w_full[:demo["k"], :demo["n"]]
    np.testing.assert_allclose(demo["result"], to_bf16_f32(a) @ to_bf16_f32(w), atol=1e-4)
    last = demo["frames"][-1]
    assert len(last["fold"]) == DEMO_ARRAY * DEMO_ARRAY
    np.testing.assert_allclose(last["out"], demo["result"], atol=1e-4)
    assert demo["frames"][0]["t"] < demo["frames"][-1]["t"] < demo["cycles"]
    assert any(f >= 0 for frame in demo["frames"] for f in frame["fold"])


def test_systolic_demo_takes_a_batched_dot_as_a_matmul():
    def f(q, k):
        return jnp.einsum("bqd,bkd->bqk", q, k)

    q = np.arange(2 * 5 * 12, dtype=np.float32).reshape(2, 5, 12) / 50
    k = np.linspace(-1, 1, 2 * 7 * 12, dtype=np.float32).reshape(2, 7, 12)
    c = tpusim.compile(f, q, k, device="v4")
    index, kernel = first_mxu_kernel(c.program)
    a, w = _as_matrices(kernel.anchor, q, k)
    np.testing.assert_allclose(a @ w, q[0] @ k[0].T, rtol=1e-6)


def test_report_html_is_self_contained(cnn, tmp_path):
    model, x, compiled = cnn
    report = compiled.report(tmp_path / "r.html", x)
    text = (tmp_path / "r.html").read_text()
    assert text == report.html and text.startswith("<!doctype html>")
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", text)  # nothing fetched
    assert "url(" not in text
    payload = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S).group(1)
    assert json.loads(payload)["meta"]["model"] == compiled.name
    assert "<iframe srcdoc=" in report._repr_html_()


def test_report_of_a_slice_breaks_out_collectives_per_mesh_axis():
    from jax.sharding import PartitionSpec as P

    def f(w, x):
        return jnp.tanh(x @ w).sum()

    c = tpusim.compile(f, jax.ShapeDtypeStruct((512, 512), jnp.float32), jax.ShapeDtypeStruct((64, 512), jnp.float32),
                       device="v5e-4", mesh={"m": 4}, in_specs=(P("m", None), P(None, "m")))
    coll = report_data(c)["collectives"]
    assert coll["mesh"] == {"m": 4} and "m" in coll["by_axis"]
    m = coll["by_axis"]["m"]
    assert m["count"] >= 1 and m["bytes"] > 0 and 0 <= m["exposed_us"] <= m["time_us"]
    assert coll["communication_us"] == pytest.approx(sum(a["time_us"] for a in coll["by_axis"].values()))


SCRIPT = (
    "import keras, numpy as np\n"
    "keras.utils.set_random_seed(0)\n"
    "model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, activation='relu'),\n"
    "                          keras.layers.Flatten(), keras.layers.Dense(10)])\n"
    "inputs = (np.random.default_rng(0).standard_normal((4, 16, 16, 3)).astype('float32'),)\n")


def test_report_command_writes_the_page_and_a_compare_view(tmp_path):
    script = tmp_path / "m.py"
    script.write_text(SCRIPT)
    out, trace = tmp_path / "r.html", tmp_path / "t.json"
    result = runner.invoke(app, ["report", str(script), "--device", "v5e", "-o", str(out), "--compare", "h100,cpu",
                                 "--trace", str(trace)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "report written" in result.output
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', out.read_text(), re.S).group(1))
    assert [r["device"] for r in data["compare"]["rows"]] and {"v5e", "h100", "cpu"} <= {r["device"] for r in data["compare"]["rows"]}
    assert "activations of your inputs" in data["learner"]["systolic"]["source"]
    assert json.loads(trace.read_text())["traceEvents"]


def test_report_command_refuses_a_bad_device_before_loading_the_script(tmp_path):
    script = tmp_path / "m.py"
    script.write_text("raise SystemExit('must not run')\n")
    result = runner.invoke(app, ["report", str(script), "--device", "v99"])
    assert result.exit_code == 2 and "--device" in result.output
    result = runner.invoke(app, ["report", str(script), "--compare", "h100,nope"])
    assert result.exit_code == 2 and "--compare" in result.output


# ---- in a real browser ------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
VIEWS = ("overview", "ops", "timeline", "roofline", "memory", "stages", "collectives", "systolic", "blocks", "bf16", "compare")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium): browser tests skipped")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: browser tests skipped")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()


def _open(browser, path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: errors.append(f"fetched {r.url}") if not r.url.startswith(("file:", "data:", "about:")) else None)
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    return page, errors


def _drawn(page, view):
    """(SVG shapes, table rows, pixel spread of the view's screenshot) of one view."""
    from PIL import Image

    shapes = page.evaluate(f"document.querySelectorAll('#{view} .content svg rect, #{view} .content svg circle, "
                           f"#{view} .content svg path').length")
    rows = page.evaluate(f"document.querySelectorAll('#{view} .content tr').length")
    png = page.locator(f"#{view} .content").screenshot()
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)
    return shapes, rows, float(pixels.std())


def test_report_renders_every_view_in_chromium(browser, cnn, tmp_path):
    model, x, compiled = cnn
    comparison = tpusim.compare(model, x, devices=["v5e", "h100"])
    path = compiled.report(tmp_path / "r.html", x, comparison=comparison).path
    page, errors = _open(browser, path)
    page.screenshot(path=str(tmp_path / "full.png"), full_page=True)
    assert errors == []
    assert float(page.get_attribute("body", "data-render-ms")) < 2000
    for view in VIEWS:
        shapes, rows, spread = _drawn(page, view)
        assert spread > 5, f"view {view} drew nothing visible"
        if view in ("timeline", "roofline", "memory", "systolic", "blocks"):
            assert shapes >= 3, view
        if view in ("overview", "ops", "memory", "stages", "bf16", "compare"):
            assert rows >= 2, view
    # interactions: sorting the op profile, stepping the systolic array
    page.click("#sort-wasted")
    wasted = page.evaluate("[...document.querySelectorAll('#op-table tr')].slice(1).map(r => r.children[5].textContent)")
    assert len(wasted) == len(compiled.estimate().ops)
    before = page.text_content("#cycle-counter")
    page.click("#systolic-step")
    assert page.text_content("#cycle-counter") != before
    page.select_option("#block-select", "1")
    assert page.evaluate("document.querySelectorAll('#blocks-svg rect').length") >= 4
    assert errors == []


def test_report_of_a_slice_renders_in_chromium(browser, tmp_path):
    from jax.sharding import PartitionSpec as P

    def f(w, x):
        return jnp.tanh(x @ w).sum()

    c = tpusim.compile(f, jax.ShapeDtypeStruct((512, 512), jnp.float32), jax.ShapeDtypeStruct((64, 512), jnp.float32),
                       device="v5e-4", mesh={"m": 4}, in_specs=(P("m", None), P(None, "m")))
    page, errors = _open(browser, c.report(tmp_path / "s.html").path)
    assert errors == []
    assert page.evaluate("document.querySelectorAll('#collectives tr').length") >= 2
    assert page.evaluate("document.getElementById('compare') === null")  # no comparison given: no empty page
