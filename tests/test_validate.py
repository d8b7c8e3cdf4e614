import pytest

from tpusim.sim.timing import DEFAULT_CONSTANTS
from tpusim.validation.validate import fit_constants, load_measurements, validate


@pytest.fixture(scope="module")
def checks():
    """Every whole-program check, estimated once for the module (ResNet and LLM steps included)."""
    return validate()


def test_at_least_ten_sourced_measurements():
    data = load_measurements()
    assert len(data["measurements"]) >= 10
    for m in data["measurements"]:
        assert m["source"] in data["sources"] and m["measured_s"] > 0


def test_documented_constants_are_the_fit_on_the_stated_subset():
    fitted = fit_constants()
    assert fitted.grid_step_s == pytest.approx(DEFAULT_CONSTANTS.grid_step_s, rel=0.02)
    assert fitted.host_dispatch_s == pytest.approx(DEFAULT_CONSTANTS.host_dispatch_s, rel=0.02)
    assert fitted.collective_fixed_s == pytest.approx(DEFAULT_CONSTANTS.collective_fixed_s, rel=0.05)


def test_measured_collectives_are_predicted_within_15_percent(checks):
    coll = [c for c in checks if "ppermute" in c.id and c.fit is None]
    assert len(coll) >= 3
    assert all(abs(c.error) < 0.15 for c in coll), [(c.id, round(c.error, 3)) for c in coll]


def test_tpu7x_all_gathers_median_within_15_percent(checks):
    """The measured TPU7x all-gather table (1.5 MB to 400 MB transferred): held-out median within
    15%, with the one constant fitted (ICI efficiency) on its two largest rows."""
    from statistics import median

    from tpusim.sim.calibration import calibration_for
    from tpusim.validation.validate import fit_ici_efficiency

    ag = [c for c in checks if c.id.startswith("tpu7x-") and "allgather" in c.id]
    assert len(ag) == 10
    assert median(abs(c.error) for c in ag if c.fit is None) <= 0.15
    assert fit_ici_efficiency()["tpu7x"] == pytest.approx(calibration_for("tpu7x").ici_efficiency, rel=0.01)


def test_held_out_measurements_are_predicted_within_15_percent(checks):
    held_out = [c for c in checks if c.fit is None and "training step" not in c.workload and "allgather" not in c.id]
    assert len(held_out) >= 10
    assert all(abs(c.error) < 0.15 for c in held_out), [(c.id, round(c.error, 3)) for c in held_out]
    # Whole training steps against published wall times (upper bounds on the step): ResNet-50 on
    # one v3 TensorCore (Flax ImageNet example) and on one v4 chip (MLPerf v1.0, 64 chips),
    # EfficientNet-B0 on one v2 TensorCore (the reference TPU trainer's 23 hours). Not
    # yet at the 25% bar on v4: the issue note says why. These bounds pin today's numbers so a
    # regression shows.
    steps = {c.id: c.error for c in checks if "training step" in c.workload}
    assert -0.25 < steps["v3-resnet50-train-b128"] < 0.30, steps
    assert -0.25 < steps["v4-resnet50-train-b128"] < 0.60, steps
    # EfficientNet-B0 at 256 images per v2 TensorCore (8 GiB): it fits only once XLA-style
    # rematerialization runs, and its depthwise convs run on the VPU.
    assert -0.15 < steps["v2-efficientnetb0-train-b256"] < 0.15, steps


def test_maxtext_v4_llm_training_rows(checks):
    """MaxText's TPU v4 table (22B on 1-8 v4-128 slices, 52B on 1-2 v4-384 slices): FSDP over ICI,
    data parallel over DCN, attention as MaxText's fused splash kernel. Every held-out row within
    10% (the slices' DCN cost is still all hidden where the measurements grow 2-7%)."""
    from tpusim.sim.calibration import calibration_for
    from tpusim.validation.validate import fit_mxu_efficiency

    rows = {c.id: c.error for c in checks if c.id.startswith("maxtext-v4-") and c.fit is None}
    assert len(rows) == 5  # the 22B one-slice row fits v4's MXU efficiency
    assert all(abs(e) <= 0.10 for e in rows.values()), rows
    assert fit_mxu_efficiency()["v4"] == pytest.approx(calibration_for("v4").mxu_efficiency, rel=0.01)

