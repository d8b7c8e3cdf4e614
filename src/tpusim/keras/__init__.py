"""Keras the way the source documents use it: `fit`, `evaluate` and `predict` with every step
computed by tpusim's compiled program, plus a callback that prices real training on a TPU."""

from tpusim.keras.callback import TPUCostCallback
from tpusim.keras.training import History, evaluate, fit, predict, training_step

__all__ = ["History", "TPUCostCallback", "evaluate", "fit", "predict", "training_step"]
