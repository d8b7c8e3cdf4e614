"""The TPU v1 paper's MLP0 shape (ISCA 2017: 5 fully connected layers of 2000, 20M weights, ReLU),
for `tpusim serve --script examples/mlp0_script.py --device v1 --batches 16,64,200,250 --latency-ms 7`."""

import jax
import jax.numpy as jnp

weights = [jax.ShapeDtypeStruct((2000, 2000), jnp.float32)] * 5


def model(x, ws):
    for w in ws:
        x = jax.nn.relu(x @ w)
    return x


inputs = (jax.ShapeDtypeStruct((200, 2000), jnp.float32), weights)
