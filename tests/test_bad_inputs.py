"""Bad input becomes a typed error naming the problem and the fix, before the expensive work:
chip files, run() arguments and command-line mistakes (exit code 2, one line)."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import tpusim
from tpusim.cli import app
from tpusim.errors import ChipConfigError, InputMismatchError

CHIPS = Path(tpusim.__file__).parent / "hardware" / "chips"
SCRIPT = str(Path(__file__).parent.parent / "examples" / "mlp_script.py")


@pytest.mark.parametrize("field,value,says", [
    ("mxus_per_core", 0.5, "whole number"), ("mxu_rows", 1e-308, "whole number"), ("mxu_cols", True, "must be a number"),
    ("hbm_gib", 1e308, "implausibly large"), ("clock_mhz", float("nan"), "finite positive"),
    ("vmem_mib_per_core", -1, "finite positive"), ("tensorcores_per_chip", 0, "finite positive")])
def test_bad_chip_fact_names_the_field(tmp_path, field, value, says):
    data = yaml.safe_load((CHIPS / "05_v5e.yaml").read_text())
    data[field] = {"value": value, "source": "GC-v5e"}
    path = tmp_path / "chip.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ChipConfigError, match=says) as err:
        tpusim.compile(lambda x: x @ x, jnp.ones((8, 8)), device=str(path))
    assert field in str(err.value) and str(path) in str(err.value)


def test_cmem_without_its_bandwidth_is_refused(tmp_path):
    """A chip with CMEM but no CMEM bandwidth would time CMEM traffic as free: refused."""
    data = yaml.safe_load((CHIPS / "04_v4.yaml").read_text())
    del data["cmem_read_gbps"], data["cmem_write_gbps"]
    path = tmp_path / "chip.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ChipConfigError, match="cmem_read_gbps"):
        tpusim.compile(lambda x: x @ x, jnp.ones((8, 8)), device=str(path))


def test_a_chip_file_that_is_not_text(tmp_path):
    path = tmp_path / "chip.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ChipConfigError, match="not UTF-8"):
        tpusim.compile(lambda x: x, jnp.ones(3), device=str(path))


def test_run_arguments_of_another_kind_are_refused():
    c = tpusim.compile(lambda x: x * 2, jnp.ones((3,), jnp.float32), device="v5e")
    with pytest.raises(InputMismatchError, match="int32 but .* float32"):
        c.run(np.ones(3, np.int32))
    np.testing.assert_array_equal(c.run(np.ones(3, np.float64)), 2.0)  # a width change, as JAX converts it
    with pytest.raises(InputMismatchError, match="shape"):
        c.run(np.ones(4, np.float32))


@pytest.mark.parametrize("args", [
    ["scale", "gpt", "--chips", "1,abc"], ["scale", "gpt", "--batch-per-chip", "-2"],
    ["scale", "gpt", "--chips", "1", "--plot", "/nonexistent/dir/x.png"],
    ["run", SCRIPT, "--trace", "/nonexistent/dir/t.json"], ["run", SCRIPT, "--roofline", "/"],
    ["run", SCRIPT, "--top", "-1"], ["compare", SCRIPT, "--plot", "/nonexistent/x.png"],
    ["compare", SCRIPT, "--devices", ""], ["demo", "--batch", "0"], ["serve", "--json", "/nonexistent/a.json"],
    ["serve", "--tpot-ms", "-5"]])
def test_command_line_mistakes_exit_2_before_any_work(args):
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output


def test_results_as_data_and_a_short_repr(tmp_path):
    import json

    c = tpusim.compile(lambda x: jnp.tanh(x @ x), jnp.ones((256, 256)), device="v5e")
    assert len(repr(c)) < 200 and "v5e" in repr(c) and "kernels" in repr(c)
    est = c.estimate()
    d = est.to_dict()
    assert d["time_s"] == est.time_s and json.dumps(d)
    frame = est.to_pandas()
    assert len(frame) == len(est.ops) and frame.time_s.sum() == pytest.approx(est.time_s)
    assert "<table>" in c._repr_html_() and "<table>" in est._repr_html_()
    out = CliRunner().invoke(app, ["run", SCRIPT, "--json", "-"])
    assert out.exit_code == 0 and json.loads(out.output)["summary"]["time_s"] > 0
    path = tmp_path / "k.csv"
    assert CliRunner().invoke(app, ["run", SCRIPT, "--csv", str(path)]).exit_code == 0
    assert path.read_text().startswith("kernel,kind,time_s")
