from typer.testing import CliRunner

from tpusim.cli import app

runner = CliRunner()


def test_devices_command():
    result = runner.invoke(app, ["devices"], env={"COLUMNS": "160"})
    assert result.exit_code == 0
    for name in ("v1", "v4", "v5e", "v6e", "tpu7x", "h100", "a100", "cpu"):
        assert name in result.output


def test_demo_command_checks_numerics():
    result = runner.invoke(app, ["demo", "--batch", "4"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "peak HBM" in result.output and "FLOPs" in result.output
    assert "conv" in result.output and "matmul" in result.output


def test_demo_with_unknown_device_fails_cleanly():
    result = runner.invoke(app, ["demo", "--device", "v99"])
    assert result.exit_code == 1
    assert "unknown device" in result.output


def test_ops_command_prints_each_primitives_rules(tmp_path):
    result = runner.invoke(app, ["ops"])
    assert result.exit_code == 0 and "conv_general_dilated" in result.output
    import pandas as pd

    assert runner.invoke(app, ["ops", "--csv", str(tmp_path / "ops.csv")]).exit_code == 0
    rules = pd.read_csv(tmp_path / "ops.csv").set_index("primitive")
    assert rules.loc["dot_general", "shard"] == "dot" and rules.loc["reshape", "identity"] == "same type"
    assert rules.loc["all_reduce", "collective"] == "all_reduce" and rules.loc["scatter-add", "in place"] == "yes"


def test_run_command_with_trace_and_roofline(tmp_path):
    import json

    script = tmp_path / "model.py"
    script.write_text(
        "import jax, jax.numpy as jnp\n"
        "def model(x, w):\n    return jax.nn.relu(x @ w)\n"
        "inputs = (jax.ShapeDtypeStruct((256, 512), jnp.float32), jax.ShapeDtypeStruct((512, 1024), jnp.float32))\n")
    trace, png = tmp_path / "t.json", tmp_path / "r.png"
    result = runner.invoke(app, ["run", str(script), "--device", "v5e", "--trace", str(trace), "--roofline", str(png)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "step time" in result.output and "MXU utilization" in result.output and "matmul" in result.output
    events = json.loads(trace.read_text())["traceEvents"]
    tracks = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    # XProf's line names for a TPU's trace, then one line per engine
    assert {"Steps", "XLA Modules", "XLA Ops", "MXU 0", "MXU 3", "VPU", "DMA (HBM<->VMEM)"} <= tracks
    process = next(e["args"]["name"] for e in events if e["name"] == "process_name")
    assert process.startswith("/device:TPU:0")
    ops_tid = next(e["tid"] for e in events if e["name"] == "thread_name" and e["args"]["name"] == "XLA Ops")
    ops = [e for e in events if e.get("ph") == "X" and e["tid"] == ops_tid]
    assert ops and all(e["args"]["hlo_category"] and "flops" in e["args"] and "bytes_accessed" in e["args"] for e in ops)
    assert any(e.get("ph") == "C" and e["name"] == "HBM in use" for e in events)
    assert png.stat().st_size > 10_000


def test_run_command_explains_a_bad_script(tmp_path):
    script = tmp_path / "bad.py"
    script.write_text("x = 1\n")
    result = runner.invoke(app, ["run", str(script)], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert "must define `model` and `inputs`" in result.output


def test_scale_command(tmp_path):
    png = tmp_path / "scale.png"
    result = runner.invoke(app, ["scale", "gpt", "--device", "v5e", "--chips", "1,4", "--batch-per-chip", "1",
                                 "--plot", str(png)], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    assert "scaling" in result.output and "plot written" in result.output
    assert png.stat().st_size > 10_000


def test_run_command_on_a_slice_traces_collectives(tmp_path):
    import json

    script = tmp_path / "tp.py"
    script.write_text(
        "import jax, jax.numpy as jnp\nfrom jax.sharding import PartitionSpec as P\n"
        "def model(w, x):\n    return jnp.tanh(x @ w)\n"
        "inputs = (jax.ShapeDtypeStruct((512, 512), jnp.float32), jax.ShapeDtypeStruct((64, 512), jnp.float32))\n"
        "mesh = {'m': 4}\nin_specs = (P('m', None), P(None, 'm'))\n")
    trace = tmp_path / "t.json"
    result = runner.invoke(app, ["run", str(script), "--device", "v5e-4", "--trace", str(trace)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    events = json.loads(trace.read_text())["traceEvents"]
    ici = next(e["tid"] for e in events if e["name"] == "thread_name" and e["args"]["name"] == "Async XLA Ops")
    assert any(e.get("ph") == "X" and e["tid"] == ici and e["args"]["hlo_category"] == "collective" for e in events)


def test_every_table_command_exports_json_and_csv(tmp_path):
    import json

    import pandas as pd

    devices = json.loads(runner.invoke(app, ["devices", "--json", "-"]).output)
    v4 = next(d for d in devices if d["name"] == "v4")
    assert v4["peak_matmul_tflops"] == 275 and v4["hbm_gib"] == 32
    ops = runner.invoke(app, ["ops", "--csv", str(tmp_path / "ops.csv")])
    assert ops.exit_code == 0 and "conv_general_dilated" in set(pd.read_csv(tmp_path / "ops.csv")["primitive"])
    scale = runner.invoke(app, ["scale", "gpt", "--device", "v5e", "--chips", "1,4", "--json", "-"])
    assert scale.exit_code == 0, scale.output
    points = json.loads(scale.output)
    assert [p["chips"] for p in points] == [1, 4] and points[1]["communication_s"] > 0
    missing = runner.invoke(app, ["validate", "--json", str(tmp_path / "nowhere" / "v.json")])
    assert missing.exit_code == 2 and "does not exist" in missing.output  # refused before any work


def test_tables_stay_readable_in_a_narrow_terminal():
    """At 90 columns the kernel table keeps what says where the time goes, nothing cut short."""
    import os

    script = os.path.join(os.path.dirname(__file__), "..", "examples", "mlp_script.py")
    result = runner.invoke(app, ["run", script, "--top", "3"], env={"COLUMNS": "90"})
    assert result.exit_code == 0, result.output
    table = result.output.split("per-kernel estimate")[1].split("└")[0]
    assert "matmul.0" in table and "% time" in table and "bound" in table and "…" not in table
    assert max(len(line) for line in table.splitlines()) <= 90
