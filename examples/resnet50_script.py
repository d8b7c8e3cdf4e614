"""Example model script for `tpusim run`: ResNet-50 inference at batch 128, bf16 inputs.

    tpusim run examples/resnet50_script.py --device v4 --trace resnet.json --roofline resnet.png
"""

import jax
import jax.numpy as jnp

from tpusim.models import resnet50

model = resnet50()
inputs = jax.ShapeDtypeStruct((128, 224, 224, 3), jnp.float32)  # no data needed to estimate
