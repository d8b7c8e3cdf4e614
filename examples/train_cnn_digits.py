"""The classic Keras CNN trained on scikit-learn's digits (upsampled to 28x28) with every step
computed by tpusim, then priced on real TPUs.   python examples/train_cnn_digits.py"""

import tpusim.keras
from tpusim.cost import step_cost
from tpusim.datasets import digits
from tpusim.models import classic_cnn

x, y = digits()
model = classic_cnn()
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = tpusim.keras.fit(model, x[:1400], y[:1400], epochs=10, batch_size=64, device="v4",
                           validation_data=(x[1400:], y[1400:]))
print("held-out accuracy:", history.history["val_accuracy"][-1])
for device in ("v4", "v5e", "v6e"):
    print(step_cost(tpusim.keras.training_step(model, x[:128], y[:128], device), dataset_size=60000, batch_size=128).describe())
