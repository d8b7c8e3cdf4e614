"""Current keras_hub backbones (small configs, random weights) compile, run and match JAX."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keras_hub's tokenizers pull in TensorFlow
keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402

import tpusim  # noqa: E402
from tpusim.reference import bf16_reference, relative_error  # noqa: E402

TOKENS = {"token_ids": np.random.default_rng(0).integers(0, 100, (2, 16)).astype(np.int32),
          "padding_mask": np.ones((2, 16), np.int32)}
DECODER = dict(vocabulary_size=100, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
               intermediate_dim=64)
BACKBONES = {
    "llama": (lambda: keras_hub.models.LlamaBackbone(**DECODER), TOKENS),
    "gemma": (lambda: keras_hub.models.GemmaBackbone(**DECODER, head_dim=8), TOKENS),
    "mistral": (lambda: keras_hub.models.MistralBackbone(**DECODER, sliding_window=8), TOKENS),
    "qwen3": (lambda: keras_hub.models.Qwen3Backbone(**DECODER, head_dim=8), TOKENS),
    "fnet": (lambda: keras_hub.models.FNetBackbone(vocabulary_size=100, num_layers=2, hidden_dim=32, intermediate_dim=64,
                                                   max_sequence_length=16),
             {"token_ids": TOKENS["token_ids"], "segment_ids": np.zeros((2, 16), np.int32)}),  # Fourier mixing
    "vit": (lambda: keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2, num_heads=4,
                                                 hidden_dim=32, mlp_dim=64),
            np.random.default_rng(1).standard_normal((2, 32, 32, 3)).astype(np.float32)),
}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_keras_hub_backbone_matches_jax(name):
    keras.utils.set_random_seed(0)
    build, x = BACKBONES[name]
    model = build()
    compiled = tpusim.compile(model, x, device="v5e")
    out = compiled.run(x)
    assert relative_error(out, bf16_reference(model, x)) < 1e-5  # JAX with the MXU's bf16 inputs
    assert relative_error(out, keras.tree.map_structure(np.asarray, model(x))) < 2e-2  # plain float32 JAX
    assert compiled.estimate().time_s > 0
