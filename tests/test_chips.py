from pathlib import Path

import pytest
import yaml

import tpusim
from tpusim.hardware.chip import CATALOG_DIR, catalog

EXPECTED = ["v1", "v2", "v3", "v4", "v5e", "v5p", "v6e", "tpu7x", "a100", "h100", "h200", "b200", "mi300x", "v100",
            "a100-40gb", "h100-pcie", "l4", "t4", "a10", "l40s", "rtx4090", "rtx3090", "rtx6000-ada", "mi250x", "cpu"]


def test_catalog_has_every_chip():
    assert tpusim.devices() == EXPECTED


@pytest.mark.parametrize("alias,name", [("tpu-v4", "v4"), ("ironwood", "tpu7x"), ("TPU7x", "tpu7x"),
                                        ("trillium", "v6e"), ("v5litepod", "v5e"), ("H100", "h100")])
def test_aliases(alias, name):
    assert tpusim.resolve_device(alias).name == name


def test_every_number_has_a_source():
    for chip in catalog():
        for field_name in type(chip).model_fields:
            value = getattr(chip, field_name)
            if isinstance(value, tpusim.hardware.Sourced):
                assert value.source.startswith("derived") or value.source in chip.sources, (chip.name, field_name)


@pytest.mark.parametrize("name", ["v2", "v3", "v4", "v5e", "v5p"])
def test_peak_matches_mxus_times_clock(name):
    """Published peak = cores x MXUs x R x C x 2 x clock, within the sources' rounding."""
    c = tpusim.resolve_device(name)
    derived = (c.tensorcores_per_chip.value * c.mxus_per_core.value * c.mxu_rows.value * c.mxu_cols.value
               * 2 * c.clock_mhz.value * 1e6 / 1e12)
    assert derived == pytest.approx(c.peak_bf16_tflops.value, rel=0.02)


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "mychip.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _v4_data() -> dict:
    return yaml.safe_load((CATALOG_DIR / "04_v4.yaml").read_text())


def test_custom_chip_file_loads(tmp_path):
    data = _v4_data()
    data["name"] = "v4-big-mxu"
    data["mxu_rows"] = {"value": 256, "source": "derived: what-if study"}
    data["mxu_cols"] = {"value": 256, "source": "derived: what-if study"}
    chip = tpusim.resolve_device(str(_write(tmp_path, data)))
    assert chip.mxu_shape == (256, 256)


def test_bad_chip_file_names_file_and_field(tmp_path):
    data = _v4_data()
    data["hbm_gib"] = {"value": -3, "source": "GC-v4"}
    path = _write(tmp_path, data)
    with pytest.raises(tpusim.ChipConfigError) as e:
        tpusim.load_chip(path)
    assert "mychip.yaml" in str(e.value) and "hbm_gib" in str(e.value)


def test_unknown_source_is_rejected(tmp_path):
    data = _v4_data()
    data["clock_mhz"] = {"value": 1000, "source": "my-blog"}
    with pytest.raises(tpusim.ChipConfigError, match="clock_mhz"):
        tpusim.load_chip(_write(tmp_path, data))


def test_missing_required_field(tmp_path):
    data = _v4_data()
    del data["hbm_bandwidth_gbps"]
    with pytest.raises(tpusim.ChipConfigError, match="hbm_bandwidth_gbps"):
        tpusim.load_chip(_write(tmp_path, data))


def test_not_yaml(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: [unclosed")
    with pytest.raises(tpusim.ChipConfigError, match="broken.yaml"):
        tpusim.load_chip(p)


def test_unknown_device_lists_known():
    with pytest.raises(tpusim.UnknownDeviceError, match="v5e"):
        tpusim.resolve_device("v9000")
    assert issubclass(tpusim.UnknownDeviceError, tpusim.TpusimError)


def test_resolve_device_takes_slice_names_and_every_error_class_is_exported():
    assert tpusim.resolve_device("v4-32").name == "v4"
    assert tpusim.resolve_device("2xv5e-256").name == "v5e"
    with pytest.raises(tpusim.SliceConfigError):
        tpusim.resolve_device("v4-33")
    with pytest.raises(tpusim.UnknownDeviceError):
        tpusim.resolve_device("v9-32")
    for name in ("TraceError", "ShardingError", "SliceConfigError", "ScriptError", "KerasModelError"):
        assert issubclass(getattr(tpusim, name), tpusim.TpusimError)


def test_rented_gpus_rank_as_their_datasheets_say():
    """T4 (Turing, no bf16: fp16 tensor rate), A10 and L40S from their datasheets: a large bf16
    GEMM ranks T4 < A10 < L40S and stays under each peak."""
    import jax.numpy as jnp

    times = {}
    for name, peak in (("t4", 65e12), ("a10", 125e12), ("l40s", 362e12)):
        a = jnp.ones((4096, 4096), jnp.bfloat16)
        est = tpusim.compile(lambda x, y: x @ y, a, a, device=name).estimate()
        assert est.tflops * 1e12 < peak
        times[name] = est.time_s
    assert times["t4"] > times["a10"] > times["l40s"]
