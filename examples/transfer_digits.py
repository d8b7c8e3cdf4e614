"""Transfer learning, every step computed by tpusim: a convolutional base is pre-trained inside
this example on the digits 0-4 of the bundled data (no downloads), then frozen, and a new head
learns the digits 5-9 from 25 labelled images. The same head on a frozen *random* base is the
baseline: the pre-trained features are what make the few labels enough (here about 0.86
accuracy on the held-out 5-9 images against about 0.70).
python examples/transfer_digits.py"""

import keras
import numpy as np

import tpusim.keras
from tpusim.datasets import digits

x, y = digits()
old, new = y < 5, y >= 5
L = keras.layers


def base() -> keras.Model:
    return keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(),
                             L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(), L.Flatten()], name="base")


def head_on(features: keras.Model, classes: int) -> keras.Model:
    return keras.Sequential([features, L.Dense(64, activation="relu"), L.Dense(classes, activation="softmax")])


keras.utils.set_random_seed(0)
pretrained = base()  # 1. pre-train on the digits 0-4
model = head_on(pretrained, 5)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
tpusim.keras.fit(model, x[old], y[old], epochs=3, batch_size=64, device="v5e", verbose=0)

few = np.flatnonzero(new)[:25]  # 2. the new task: digits 5-9, 25 labels to learn from
rest = np.flatnonzero(new)[25:]
accuracy = {}
for name, features in (("pre-trained base", pretrained), ("random base", base())):
    features.trainable = False
    frozen = [w.numpy().copy() for w in features.weights]
    model = head_on(features, 5)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    tpusim.keras.fit(model, x[few], y[few] - 5, epochs=20, batch_size=25, device="v5e", verbose=0)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(frozen, features.weights)), "the frozen base changed"
    accuracy[name] = tpusim.keras.evaluate(model, x[rest], y[rest] - 5, device="v5e", verbose=0)["accuracy"]
    print(f"digits 5-9 on {len(rest)} held-out images, head trained on {len(few)}, {name} frozen: "
          f"accuracy {accuracy[name]:.3f}")
assert accuracy["pre-trained base"] > accuracy["random base"]
