"""The issue's models, end to end: compile, run, and agree with JAX.

Tolerances: against JAX with the same bf16 rounding of MXU inputs, 1e-3 relative (Frobenius);
with precision="highest", 1e-5 of plain float32 JAX; default precision against float32 JAX
within 1e-2 (bf16 inputs carry up to 2^-8 relative rounding each; errors partly cancel).
"""

import numpy as np
import pytest

import tpusim
from tpusim.models import classic_cnn, lstm_text_model, resnet50, transformer_example, vgg16_transfer
from tpusim.reference import bf16_reference, relative_error


def _transformer():
    fn, params, x, mask = transformer_example(batch=2, seq=32, d_model=128, heads=4, d_ff=512)
    return fn, (params, x, mask), fn(params, x, mask)


def _keras(model, x):
    return model, (x,), np.asarray(model(x, training=False))


CASES = {
    "classic_cnn": lambda: _keras(classic_cnn(), np.random.default_rng(0).normal(size=(8, 28, 28, 1)).astype(np.float32)),
    "lstm_text": lambda: _keras(lstm_text_model(), np.random.default_rng(0).integers(0, 1000, (4, 20)).astype(np.int32)),
    "transformer_block": _transformer,
    "vgg16_transfer": lambda: _keras(vgg16_transfer(), np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)),
    "resnet50": lambda: _keras(resnet50(), np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_model_matches_jax(name):
    fn, args, ref_f32 = CASES[name]()
    compiled = tpusim.compile(fn, *args, device="v4")
    out = compiled.run(*args)
    assert relative_error(out, bf16_reference(fn, *args)) < 1e-3
    assert relative_error(out, ref_f32) < 1e-2
    highest = tpusim.compile(fn, *args, device="v4", precision="highest").run(*args)
    assert relative_error(highest, ref_f32) < 1e-5


def test_lstm_stays_one_loop():
    compiled = tpusim.compile(lstm_text_model(), np.zeros((4, 20), np.int32))
    scans = [k for k in compiled.kernels if k.kind == "scan"]
    assert len(scans) == 1 and scans[0].grid == (20,)
    body_mxu = [k for k in scans[0].bodies["body"].kernels if k.mxu is not None]
    assert len(body_mxu) == 2  # the input and recurrent matmuls of one step


def test_resnet50_structure():
    compiled = tpusim.compile(resnet50(), np.zeros((1, 224, 224, 3), np.float32), device="v4")
    convs = [k for k in compiled.kernels if k.kind == "conv"]
    assert len(convs) == 53
    # batch norm, relu and the residual adds are epilogues: no separate elementwise kernels between convs
    assert sum(k.kind == "loop" for k in compiled.kernels) <= 6
    c = compiled.counts()
    assert 7.0e9 < c.flops_xla < 8.5e9  # ~4.1 GMACs for ResNet-50 at 224x224
