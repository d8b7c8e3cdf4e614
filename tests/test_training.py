"""Training on the simulated TPU: Keras's own train step compiled and run by tpusim."""

import jax
import numpy as np
import pytest

import tpusim
import tpusim.keras
from tpusim.datasets import digits, text_sequences
from tpusim.models import classic_cnn, lstm_text_model, vgg16_transfer
from tpusim.reference import relative_error


def _compiled_cnn(optimizer="adam"):
    model = classic_cnn()
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_one_training_step_matches_jax(rng):
    model = _compiled_cnn()
    x, y = digits()
    bx, by = x[:32], y[:32]
    for precision, tol in (("highest", 1e-4), ("default", 3e-2)):
        step = tpusim.keras.training_step(model, bx, by, "v4", precision)
        state = tpusim.keras.training._state(model)
        logs, new_state = step.run(state, (bx, by))
        ref_logs, ref_state = jax.jit(lambda s, d: model.train_step(s, d))(state, (bx, by))
        assert abs(float(logs["loss"]) - float(ref_logs["loss"])) < tol * abs(float(ref_logs["loss"]))
        # the weight updates themselves (new - old), the part the gradient decides
        upd = [np.asarray(n) - np.asarray(o) for n, o in zip(new_state[0], state[0])]
        ref_upd = [np.asarray(n) - np.asarray(o) for n, o in zip(ref_state[0], state[0])]
        assert relative_error(upd, ref_upd) < (1e-3 if precision == "highest" else 0.2)


def test_backward_primitives_are_in_the_program():
    model = _compiled_cnn()
    x, y = digits()
    step = tpusim.keras.training_step(model, x[:8], y[:8], "v5e")
    prims = {op.prim for op in step.graph.walk()}
    assert {"conv_general_dilated", "select_and_scatter_add", "dot_general"} <= prims
    lstm = lstm_text_model(vocab=100, length=6, units=16)
    lstm.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    step = tpusim.keras.training_step(lstm, np.zeros((4, 6), np.int32), np.zeros(4, np.int32), "v5e")
    prims = {op.prim for op in step.graph.walk()}
    assert "scatter-add" in prims  # embedding gradient
    scans = [op for op in step.graph.walk() if op.prim == "scan"]
    assert any(op.params["reverse"] for op in scans) and all(op.params["trip_count"] == 6 for op in scans)


def test_classic_cnn_learns_digits_to_95_percent():
    x, y = digits()
    model = _compiled_cnn()
    history = tpusim.keras.fit(model, x[:1400], y[:1400], epochs=8, batch_size=64, device="v4",
                               validation_data=(x[1400:], y[1400:]), verbose=0)
    assert history.history["val_accuracy"][-1] >= 0.95
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert len(history.history["device_time_s"]) == 8 and history.history["device_time_s"][0] > 0
    # the model's own variables were updated in place: Keras agrees on held-out accuracy
    keras_acc = float(np.mean(np.argmax(model.predict(x[1400:], verbose=0), -1) == y[1400:]))
    assert keras_acc >= 0.95
    result = tpusim.keras.evaluate(model, x[1400:], y[1400:], batch_size=128, verbose=0)
    assert result["accuracy"] == pytest.approx(history.history["val_accuracy"][-1], abs=0.01)
    pred = tpusim.keras.predict(model, x[1400:1500], batch_size=64)
    assert pred.shape == (100, 10) and relative_error(pred, model.predict(x[1400:1500], verbose=0)) < 0.05


def test_lstm_text_model_loss_falls():
    x, y, vocab = text_sequences(length=20)
    model = lstm_text_model(vocab=1000, length=20)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = tpusim.keras.fit(model, x[:512], y[:512], epochs=3, batch_size=64, device="v5e", verbose=0)
    losses = history.history["loss"]
    assert losses[0] > losses[-1] + 0.5  # ~6.9 (log 1000) falling clearly


def test_vgg16_transfer_learning_keeps_the_base_frozen():
    x, y = digits(size=32, rgb=True)
    model = vgg16_transfer(input_shape=(32, 32, 3), classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    base = model.layers[0]
    assert not base.trainable
    frozen_before = [np.array(w.numpy()) for w in base.weights]
    head_before = [np.array(w.numpy()) for w in model.layers[-1].weights]
    history = tpusim.keras.fit(model, x[:256], y[:256], epochs=3, batch_size=64, device="v6e", verbose=0)
    for before, w in zip(frozen_before, base.weights):
        np.testing.assert_array_equal(before, np.asarray(w))  # bit-identical
    assert any(not np.array_equal(b, np.asarray(w)) for b, w in zip(head_before, model.layers[-1].weights))
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_fit_needs_a_compiled_model():
    with pytest.raises(tpusim.TpusimError, match="model.compile"):
        tpusim.keras.fit(classic_cnn(), np.zeros((4, 28, 28, 1), np.float32), np.zeros(4, np.int32))


def test_step_cost_on_tpus():
    from tpusim.cost import MFU_CONVENTION, step_cost

    model = _compiled_cnn()
    x, y = digits()
    costs = {d: step_cost(tpusim.keras.training_step(model, x[:128], y[:128], d), dataset_size=60000, batch_size=128)
             for d in ("v4", "v5e", "v6e")}
    for d, c in costs.items():
        assert c.steps_per_epoch == 469 and c.epoch_time_s == pytest.approx(469 * c.step_time_s)
        assert 0 < c.mfu < 1 and c.tflops > 0
        assert c.epoch_cost_usd == pytest.approx(c.epoch_time_s / 3600 * c.price_usd_per_chip_hour)
        assert d in c.describe()
    assert "MFU" in MFU_CONVENTION


def test_cost_callback_in_ordinary_keras_fit():
    model = _compiled_cnn()
    x, y = digits()
    cb = tpusim.keras.TPUCostCallback(devices=["v5e", "v6e"], dataset_size=60000, batch_size=64, verbose=0)
    before = model.evaluate(x[:64], y[:64], verbose=0)
    history = model.fit(x[:256], y[:256], epochs=1, batch_size=64, callbacks=[cb], verbose=0)  # real CPU training
    assert set(cb.costs) == {"v5e", "v6e"}
    assert cb.costs["v6e"].step_time_s < cb.costs["v5e"].step_time_s  # a faster chip
    assert "loss" in history.history and model.evaluate(x[:64], y[:64], verbose=0) != before


def test_plain_jax_training_step_with_optax(rng):
    """A pure JAX step: transformer block loss, value_and_grad, optax AdamW update."""
    import optax

    from tpusim.models import transformer_block, transformer_block_params

    params = transformer_block_params(d_model=64, heads=4, d_ff=128)
    heads = int(params.pop("heads"))
    opt = optax.adamw(1e-3)
    opt_state = opt.init(params)
    x = rng.normal(size=(2, 16, 64)).astype(np.float32)
    mask = np.tril(np.ones((16, 16), bool))[None].repeat(2, 0)

    def train_step(params, opt_state, x, mask):
        def loss_fn(p):
            out = transformer_block(p, x, mask, heads)
            return jax.numpy.mean((out - x) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    compiled = tpusim.compile(train_step, params, opt_state, x, mask, device="v5e", precision="highest")
    new_params, _, loss = compiled.run(params, opt_state, x, mask)
    ref_params, _, ref_loss = jax.jit(train_step)(params, opt_state, x, mask)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-5)
    upd = jax.tree.map(lambda n, o: np.asarray(n) - np.asarray(o), new_params, params)
    ref_upd = jax.tree.map(lambda n, o: np.asarray(n) - np.asarray(o), ref_params, params)
    assert relative_error(upd, ref_upd) < 1e-3
    assert compiled.estimate().time_s > 0


def test_training_oom_names_what_is_too_big():
    model = vgg16_transfer(freeze_base=False)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(tpusim.OutOfMemoryError) as e:
        tpusim.keras.training_step(model, jax.ShapeDtypeStruct((256, 224, 224, 3), "float32"),
                                   jax.ShapeDtypeStruct((256,), "int32"), "v5e")
    kinds = e.value.by_kind
    assert max(kinds, key=kinds.get) == "activations"
    assert {"parameters", "optimizer state"} <= set(kinds)
    assert "activation saved for the backward pass" in str(e.value)
    # Adam: two moments per parameter; the step donates its state, so buffers already updated
    # in place may have left the parameters' bucket by the peak, never the moments'
    assert kinds["optimizer state"] >= 1.5 * kinds["parameters"]


def test_fit_on_a_slice_is_data_parallel():
    """fit(device="v5e-4") runs every step data parallel on 4 simulated devices, and learns
    like the single-chip run."""
    x, y = digits()
    losses = {}
    for device in ("v5e", "v5e-4"):
        model = _compiled_cnn()
        h = tpusim.keras.fit(model, x[:256], y[:256], epochs=2, batch_size=64, device=device, shuffle=False, verbose=0)
        losses[device] = h.history["loss"]
        step = next(iter(h.compiled.values()))
        assert (step.distribution is not None) == (device == "v5e-4")
    np.testing.assert_allclose(losses["v5e-4"], losses["v5e"], rtol=2e-2)
