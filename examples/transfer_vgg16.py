"""VGG16 transfer learning at 32x32: the convolutional base frozen (weights=None: nothing is
downloaded), a new Dense head trained on digits, every step computed by tpusim.
python examples/transfer_vgg16.py"""

import numpy as np

import tpusim.keras
from tpusim.cost import step_cost
from tpusim.datasets import digits
from tpusim.models import vgg16_transfer

x, y = digits(size=32, rgb=True)
model = vgg16_transfer(input_shape=(32, 32, 3), classes=10, freeze_base=True)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
frozen = [w.numpy().copy() for w in model.layers[0].weights]
history = tpusim.keras.fit(model, x[:1400], y[:1400], epochs=5, batch_size=64, device="v6e",
                           validation_data=(x[1400:], y[1400:]))
assert all(np.array_equal(a, w.numpy()) for a, w in zip(frozen, model.layers[0].weights)), "base changed"
print("base unchanged; loss per epoch:", [round(v, 3) for v in history.history["loss"]])
for device in ("v4", "v5e", "v6e"):
    print(step_cost(tpusim.keras.training_step(model, x[:64], y[:64], device), dataset_size=1400, batch_size=64).describe())
