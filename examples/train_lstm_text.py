"""The LSTM text model (Embedding 1000x128, LSTM 128, Dense 1000 softmax) learning next words of
the corpus that ships with tpusim, every step computed by tpusim.   python examples/train_lstm_text.py"""

import tpusim.keras
from tpusim.cost import step_cost
from tpusim.datasets import text_sequences
from tpusim.models import lstm_text_model

x, y, vocab = text_sequences(length=20)
model = lstm_text_model(vocab=1000, length=20)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = tpusim.keras.fit(model, x, y, epochs=10, batch_size=64, device="v5e")
print("loss per epoch:", [round(v, 3) for v in history.history["loss"]])
for device in ("v4", "v5e", "v6e"):
    print(step_cost(tpusim.keras.training_step(model, x[:64], y[:64], device), dataset_size=len(x), batch_size=64).describe())
