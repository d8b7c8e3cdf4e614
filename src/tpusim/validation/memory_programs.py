"""Programs whose peak HBM tpusim checks against XLA's own buffer assignment.

Each builder returns a `MemoryProgram`: a JAX function, its example arguments (ShapeDtypeStructs,
nothing allocated) and the arguments it donates, as a training loop would jit it (Keras donates
its state, `donate_argnums=0`). The same builders feed tpusim (`tpusim validate`) and the
development-time oracle (`benchmarks/xla_memory_oracle.py`, run under a separate venv with
libtpu), whose numbers are shipped in `data/xla_memory.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp

S = jax.ShapeDtypeStruct


@dataclass
class MemoryProgram:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    donate_argnums: tuple[int, ...] = ()
    what: str = ""
    # Sharded programs: the mesh ({axis: size}, over the topology's first devices) and a
    # PartitionSpec pytree per argument; peak HBM is then per device.
    mesh: dict[str, int] | None = None
    in_specs: tuple[Any, ...] | None = None


def _mlp_fwd() -> MemoryProgram:
    b, d = 1024, 4096

    def mlp(w1: jax.Array, w2: jax.Array, x: jax.Array) -> jax.Array:
        return jnp.maximum(x @ w1, 0) @ w2

    return MemoryProgram(mlp, (S((d, 4 * d), jnp.bfloat16), S((4 * d, d), jnp.bfloat16), S((b, d), jnp.bfloat16)),
                         what="bf16 MLP forward 4096->16384->4096, batch 1024")


def _mlp_train(remat: bool) -> Callable[[], MemoryProgram]:
    def build() -> MemoryProgram:
        b, d, layers = 1024, 2048, 4

        def loss(ws: list, x: jax.Array) -> jax.Array:
            h = x
            for w in ws:
                block = lambda h, w: jnp.tanh(h @ w)  # noqa: E731
                h = jax.checkpoint(block)(h, w) if remat else block(h, w)
            return jnp.mean(h.astype(jnp.float32) ** 2)

        def step(ws: list, x: jax.Array) -> list:
            g = jax.grad(loss)(ws, x)
            return [w - 0.01 * gw for w, gw in zip(ws, g)]

        return MemoryProgram(step, ([S((d, d), jnp.float32) for _ in range(layers)], S((b, d), jnp.float32)), (0,),
                             what=f"f32 4-layer tanh MLP SGD step, batch 1024{', remat' if remat else ''}")

    return build


def _attn_train(remat: bool) -> Callable[[], MemoryProgram]:
    def build() -> MemoryProgram:
        b, t, d, h = 8, 1024, 1024, 8

        def block(p: list, x: jax.Array) -> jax.Array:
            q, k, v = ((x @ p[i]).reshape(b, t, h, d // h) for i in range(3))
            s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / 8.0
            a = jax.nn.softmax(s, axis=-1)
            o = jnp.einsum("bhqk,bkhd->bqhd", a, v).reshape(b, t, d)
            y = x + o @ p[3]
            return y + jnp.maximum(y @ p[4], 0) @ p[5]

        def loss(ps: list, x: jax.Array) -> jax.Array:
            for p in ps:
                x = (jax.checkpoint(block) if remat else block)(p, x)
            return jnp.mean(x ** 2)

        def step(ps: list, x: jax.Array) -> list:
            g = jax.grad(loss)(ps, x)
            return jax.tree.map(lambda a, b: a - 1e-3 * b, ps, g)

        p = [S((d, d), jnp.float32)] * 4 + [S((d, 4 * d), jnp.float32), S((4 * d, d), jnp.float32)]
        return MemoryProgram(step, ([list(p) for _ in range(2)], S((b, t, d), jnp.float32)), (0,),
                             what=f"f32 2-layer transformer SGD step, T=1024, batch 8{', remat' if remat else ''}")

    return build


def _conv_fwd() -> MemoryProgram:
    def convs(w1: jax.Array, w2: jax.Array, x: jax.Array) -> jax.Array:
        dn = ("NHWC", "HWIO", "NHWC")
        y = jnp.maximum(jax.lax.conv_general_dilated(x, w1, (1, 1), "SAME", dimension_numbers=dn), 0)
        return jax.lax.conv_general_dilated(y, w2, (2, 2), "SAME", dimension_numbers=dn)

    return MemoryProgram(convs, (S((3, 3, 64, 128), jnp.bfloat16), S((3, 3, 128, 256), jnp.bfloat16),
                                 S((64, 56, 56, 64), jnp.bfloat16)), what="two bf16 3x3 convs, batch 64 at 56x56")


def _gpt(name: str, **kw: Any) -> Callable[[], MemoryProgram]:
    def build() -> MemoryProgram:
        from tpusim.models.zoo import gpt_train_step_shapes

        fn, args = gpt_train_step_shapes(**kw)
        return MemoryProgram(fn, args, (0, 1), what=name)

    return build


def _gpt_sharded(name: str, mesh: dict[str, int], data_axes: Any, fsdp: str | None, model: str | None,
                 **kw: Any) -> Callable[[], MemoryProgram]:
    def build() -> MemoryProgram:
        from tpusim.models.zoo import gpt_specs, gpt_train_step_shapes

        fn, args = gpt_train_step_shapes(**kw, activation_axes=data_axes)
        return MemoryProgram(fn, args, (0, 1), what=name, mesh=mesh, in_specs=gpt_specs(args[0], data_axes, fsdp, model))

    return build


def _parallel(name: str, kind: str, mesh: dict[str, int], **kw: Any) -> Callable[[], MemoryProgram]:
    """The shard_map-written MoE and pipeline steps of tpusim.models.parallel."""

    def build() -> MemoryProgram:
        from tpusim.models import parallel

        make = parallel.moe_train_step_shapes if kind == "moe" else parallel.pipeline_train_step_shapes
        fn, args, specs = make(**kw)
        return MemoryProgram(fn, args, (0, 1), what=name, mesh=mesh, in_specs=specs)

    return build


def _bert() -> MemoryProgram:
    from tpusim.models.zoo import bert_base_shapes

    fn, args = bert_base_shapes(batch=32, seq=128)
    return MemoryProgram(fn, args, what="BERT-base forward, f32, batch 32 x 128")


def _keras_train(name: str, make: Callable[[], Any], batch: int, optimizer: str,
                 loss: str = "sparse_categorical_crossentropy") -> Callable[[], MemoryProgram]:
    def build() -> MemoryProgram:
        import numpy as np

        from tpusim.keras.training import _named_train_step, _state

        model = make()
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
        x = S((batch, *model.input_shape[1:]), np.float32)
        y = S((batch,), np.int32)
        model._symbolic_build(data_batch=(x, y))
        state = jax.tree.map(lambda a: S(np.shape(a), a.dtype), _state(model))
        return MemoryProgram(_named_train_step(model), (state, (x, y)), (0,), what=name)

    return build


def _application(name: str) -> Any:
    """A keras.applications model with random weights (nothing is downloaded)."""
    import keras

    return getattr(keras.applications, name)(weights=None, input_shape=(224, 224, 3))


def _resnet50() -> Any:
    from tpusim.models.zoo import resnet50

    return resnet50()


def _cnn() -> Any:
    from tpusim.models.zoo import classic_cnn

    return classic_cnn()


PROGRAMS: dict[str, Callable[[], MemoryProgram]] = {
    "mlp_fwd_bf16": _mlp_fwd,
    "conv_fwd_bf16": _conv_fwd,
    "bert_base_fwd": _bert,
    "mlp_train": _mlp_train(False),
    "mlp_train_remat": _mlp_train(True),
    "attn_train": _attn_train(False),
    "attn_train_remat": _attn_train(True),
    "gpt124m_train_remat": _gpt("GPT-2 124M Adam step, bf16, T=1024, batch 8, remat", batch=8),
    "gpt124m_train": _gpt("GPT-2 124M Adam step, bf16, T=1024, batch 4, no remat", batch=4, remat=False),
    "lm1b_train_remat": _gpt("1.1B LM Adam step (20 x d2048, vocab 32k), bf16, T=2048, batch 4, remat", layers=20,
                             d_model=2048, heads=16, seq=2048, batch=4, vocab=32000),
    "cnn_train": _keras_train("Keras MNIST CNN Adam step, batch 128", _cnn, 128, "adam"),
    "resnet50_train": _keras_train("Keras ResNet-50 SGD step, f32, batch 64 at 224", _resnet50, 64, "sgd"),
    "mobilenetv2_train": _keras_train("Keras MobileNetV2 SGD step, f32, batch 64 at 224 (depthwise convs)",
                                      lambda: _application("MobileNetV2"), 64, "sgd"),
    "efficientnetb0_train": _keras_train("Keras EfficientNetB0 RMSprop step, f32, batch 32 at 224",
                                         lambda: _application("EfficientNetB0"), 32, "rmsprop"),
    # sharded over the 4 chips of a v4-8 (per-device peak)
    "gpt124m_fsdp4_train": _gpt_sharded("GPT-2 124M Adam step, bf16, T=1024, batch 16, remat; FSDP over 4 chips",
                                        {"fsdp": 4}, ("fsdp",), "fsdp", None, batch=16),
    "lm1b_fsdp2_tp2_train": _gpt_sharded("1.1B LM Adam step, bf16, T=2048, batch 8, remat; FSDP 2 x tensor 2",
                                         {"fsdp": 2, "model": 2}, ("fsdp",), "fsdp", "model", layers=20, d_model=2048,
                                         heads=16, seq=2048, batch=8, vocab=32000),
    "moe_ep4_train": _parallel("Mixtral-shaped MoE step (8 layers, d1024, 8 experts top-2, T=1024, batch 16), bf16; "
                               "experts over 4 chips (shard_map all-to-all)", "moe", {"data": 1, "expert": 4},
                               layers=8, d_model=1024, heads=8, kv_heads=4, experts=8, d_ff=2048, vocab=32000,
                               seq=1024, batch=16),
    "pipeline_pp4_train": _parallel("GPipe LM step (4 stages x 2 layers d1024, 8 microbatches of 4 x 1024), bf16; "
                                    "stages over 4 chips (shard_map ppermute)", "pipeline", {"data": 1, "stage": 4},
                                    stages=4, layers_per_stage=2, microbatches=8, microbatch=4, d_model=1024, heads=8,
                                    d_ff=4096, vocab=32000, seq=1024),
}
