"""Example model script for `tpusim run` with a plain JAX function."""

import jax
import jax.numpy as jnp
import numpy as np

rng = np.random.default_rng(0)
params = [rng.normal(size=s).astype(np.float32) * 0.05 for s in [(784, 2048), (2048, 2048), (2048, 10)]]


def model(x):
    for w in params[:-1]:
        x = jax.nn.relu(x @ w)
    return jax.nn.log_softmax(x @ params[-1])


inputs = jax.ShapeDtypeStruct((1024, 784), jnp.float32)
