"""Small data sets made on the spot (nothing is downloaded): scikit-learn's digits as 28x28 (or
RGB 32x32) images, and next-word sequences from the short corpus that ships with tpusim."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from tpusim.errors import TpusimError

CORPUS = Path(__file__).parent / "data" / "corpus.txt"


def digits(size: int = 28, rgb: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits, upsampled to size x size (nearest neighbour, centred),
    scaled to [0, 1] and shuffled. Channels last: (n, size, size, 1) or (n, size, size, 3)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # a base dependency; only a broken install lacks it
        raise TpusimError("tpusim.datasets.digits needs scikit-learn: pip install scikit-learn") from e
    data = load_digits()
    scale = -(-size // 8)
    big = np.kron(data.images.astype(np.float32) / 16.0, np.ones((1, scale, scale), np.float32))
    off = (big.shape[1] - size) // 2
    x = big[:, off:off + size, off:off + size, None]
    if rgb:
        x = np.repeat(x, 3, axis=-1)
    y = data.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    return x[order], y[order]


def text_sequences(length: int = 20, vocab_size: int = 1000) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Next-word prediction pairs from the bundled corpus: x (n, length) int32 token ids, y (n,)
    the following token. Id 0 is the out-of-vocabulary token."""
    words = re.findall(r"[a-z]+", CORPUS.read_text().lower())
    vocab = ["<unk>"] + [w for w, _ in Counter(words).most_common(vocab_size - 1)]
    index = {w: i for i, w in enumerate(vocab)}
    ids = np.array([index.get(w, 0) for w in words], np.int32)
    n = len(ids) - length
    x = np.stack([ids[i:i + length] for i in range(n)])
    y = ids[length:length + n]
    return x, y, vocab
