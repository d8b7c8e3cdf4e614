"""flax.nnx models: a CNN with dropout (PRNG key state in, updated key state out) compiles, runs
and matches JAX, in training mode (dropout on) and in eval mode."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import tpusim

nnx = pytest.importorskip("flax.nnx")


class CNN(nnx.Module):
    def __init__(self, rngs: "nnx.Rngs") -> None:
        self.conv1 = nnx.Conv(1, 16, kernel_size=(3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, kernel_size=(3, 3), rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.fc = nnx.Linear(32 * 7 * 7, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.avg_pool(nnx.relu(self.conv1(x)), (2, 2), (2, 2))
        x = nnx.avg_pool(nnx.relu(self.conv2(x)), (2, 2), (2, 2))
        return self.fc(self.drop(x.reshape(x.shape[0], -1)))


@pytest.mark.parametrize("train", [True, False])
def test_nnx_cnn_with_dropout_matches_jax(train):
    model = CNN(nnx.Rngs(0))
    if not train:
        model.eval()
    graphdef, state = nnx.split(model)

    def forward(state, x):
        m = nnx.merge(graphdef, state)
        return m(x), nnx.state(m)

    x = np.random.default_rng(0).normal(size=(4, 28, 28, 1)).astype(np.float32)
    out, new_state = tpusim.compile(forward, state, x, device="v5e").run(state, x)
    ref, ref_state = jax.jit(forward)(state, x)
    np.testing.assert_allclose(out, ref, atol=2e-2)  # bf16 MXU inputs; the dropout masks are the same
    # the Rngs state advanced as JAX advances it (typed keys come back as JAX keys)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(ref_state)):
        if jax.dtypes.issubdtype(b.dtype, jax.dtypes.prng_key):
            np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))
