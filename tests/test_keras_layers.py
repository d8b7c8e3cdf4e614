"""The Keras layers people reach for every day compile and match JAX."""

import numpy as np
import pytest

import tpusim
from tpusim.reference import bf16_reference, relative_error


def _layers():
    import keras

    L = keras.layers
    img = (12, 12, 6)
    seq = (10, 8)
    return {
        "conv1d_pool": (seq, [L.Conv1D(8, 3, padding="same", activation="elu"), L.MaxPooling1D(2), L.GlobalAveragePooling1D()]),
        "conv2d_transpose": (img, [L.Conv2DTranspose(4, 3, strides=2, padding="same")]),
        "depthwise": (img, [L.DepthwiseConv2D(3, padding="same"), L.BatchNormalization()]),
        "separable": (img, [L.SeparableConv2D(8, 3, activation="swish")]),
        "avgpool_gap": (img, [L.AveragePooling2D(2), L.GlobalAveragePooling2D(), L.Dense(3, activation="softplus")]),
        "upsample_pad": (img, [L.UpSampling2D(), L.ZeroPadding2D(1), L.Cropping2D(2), L.Conv2D(4, 1, activation="selu")]),
        "reshape_permute": (img, [L.Reshape((36, 24)), L.Permute((2, 1)), L.Flatten(), L.Dense(5, activation="leaky_relu")]),
        "layernorm_dropout": (seq, [L.LayerNormalization(), L.Dropout(0.5), L.Dense(6, activation="gelu")]),
        "gru": (seq, [L.GRU(12)]),
        "simple_rnn_seq": (seq, [L.SimpleRNN(7, return_sequences=True)]),
        "bidirectional_lstm": (seq, [L.Bidirectional(L.LSTM(6))]),
        "attention": (seq, None),
        "residual_concat": (img, None),
    }


def _build(name):
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    shape, layers = _layers()[name]
    inp = keras.Input(shape)
    if name == "attention":
        out = L.MultiHeadAttention(num_heads=2, key_dim=4)(inp, inp, use_causal_mask=True)
    elif name == "residual_concat":
        a = L.Conv2D(6, 3, padding="same", activation="relu")(inp)
        b = L.Add()([a, inp])
        out = L.Concatenate()([b, L.Conv2D(2, 1)(inp)])
        out = L.Activation("sigmoid")(L.BatchNormalization()(out))
    else:
        out = inp
        for layer in layers:
            out = layer(out)
    model = keras.Model(inp, out)
    # make batch-norm statistics non-trivial
    for w in model.non_trainable_weights:
        w.assign(np.random.default_rng(1).uniform(0.5, 1.5, size=w.shape).astype("float32"))
    return model, shape


@pytest.mark.parametrize("name", sorted(_layers()))
def test_keras_layer(name):
    model, shape = _build(name)
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    out = tpusim.compile(model, x, device="v5e").run(x)
    assert relative_error(out, bf16_reference(model, x)) < 1e-3
    out_hi = tpusim.compile(model, x, device="v5e", precision="highest").run(x)
    assert relative_error(out_hi, np.asarray(model(x, training=False))) < 1e-5
