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


def test_ops_command():
    result = runner.invoke(app, ["ops"])
    assert result.exit_code == 0 and "conv_general_dilated" in result.output
