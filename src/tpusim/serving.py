"""Serving an LLM: time to first token, time per output token and throughput against batch
size, and what is left for the KV cache.

`serve(model, device, batches=[...], prompt_len=, gen_len=)` compiles the model's prefill (the
prompt, filling the KV cache) and its decode step (one token per sequence, attending to a cache
of prompt_len + gen_len positions) for every batch size, on one chip or, tensor-parallel, on a
slice or GPU node ("v5e-8", "h100-8"). `model` is a Llama-shaped config (a name such as
"llama3-8b" or a `tpusim.models.llama.LlamaConfig`); `serve_steps` takes any model's prefill and
decode-step functions. `latency_vs_batch` answers the same question for classic models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tpusim.api import compile as tpu_compile
from tpusim.comparison import devices_of
from tpusim.errors import OutOfMemoryError, TpusimError
from tpusim.models import llama


@dataclass(frozen=True)
class ServingRow:
    batch: int
    ttft_s: float  # prefill of the whole batch's prompts
    tpot_s: float  # one decode step (every sequence gets one token)
    tokens_per_s: float  # decode throughput over the batch
    kv_cache_gib: float  # per device
    weights_gib: float  # per device
    peak_hbm_gib: float  # the decode step's, per device
    fits: bool


class ServingReport:
    def __init__(self, model: str, device: str, prompt_len: int, gen_len: int, rows: list[ServingRow],
                 kv_bytes_per_token: float, hbm_bytes: float) -> None:
        self.model, self.device, self.prompt_len, self.gen_len, self.rows = model, device, prompt_len, gen_len, rows
        self.kv_bytes_per_token, self.hbm_bytes = kv_bytes_per_token, hbm_bytes

    @property
    def kv_capacity_tokens(self) -> int:
        """Cache positions (over all sequences) that fit beside the weights, per device."""
        weights = self.rows[0].weights_gib * 2**30 if self.rows else 0.0
        return max(0, int((self.hbm_bytes - weights) / self.kv_bytes_per_token))

    def largest_batch(self, tpot_target_s: float | None = None) -> int | None:
        """The largest batch that fits (and, given a target, decodes within it)."""
        ok = [r.batch for r in self.rows if r.fits and (tpot_target_s is None or r.tpot_s <= tpot_target_s)]
        return max(ok) if ok else None

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.rows]).set_index("batch")

    def table(self) -> Any:
        from rich.table import Table

        t = Table(title=f"{self.model} on {self.device}: prompt {self.prompt_len}, {self.gen_len} new tokens (estimates)")
        for col in ("batch", "TTFT", "TPOT", "tokens/s", "KV cache", "weights", "peak HBM", "fits"):
            t.add_column(col, justify="right")
        for r in self.rows:
            t.add_row(str(r.batch), f"{r.ttft_s * 1e3:.3g} ms", f"{r.tpot_s * 1e3:.3g} ms", f"{r.tokens_per_s:,.0f}",
                      f"{r.kv_cache_gib:.2f} GiB", f"{r.weights_gib:.2f} GiB", f"{r.peak_hbm_gib:.2f} GiB",
                      "yes" if r.fits else "no")
        return t

    def __repr__(self) -> str:
        return (f"ServingReport({self.model} on {self.device}: batches {[r.batch for r in self.rows]}, "
                f"largest that fits {self.largest_batch()})")


def _config(model: Any) -> tuple[str, llama.LlamaConfig]:
    if isinstance(model, llama.LlamaConfig):
        return "Llama-shaped model", model
    if isinstance(model, str) and model.lower() in llama.CONFIGS:
        return model, llama.CONFIGS[model.lower()]
    raise TpusimError(f"unknown model {model!r}: give a tpusim.models.llama.LlamaConfig or one of "
                      f"{', '.join(llama.CONFIGS)}")


@dataclass(frozen=True)
class Steps:
    """An LLM as two functions and their example arguments per batch size: `prefill(*args)`
    over the prompt and `decode(*args)` for one new token per sequence, each a JAX function.
    `args(batch)` returns (prefill args, decode args); `donate` names the KV-cache arguments
    (donated and updated in place). Mesh and in_specs as `tpusim.compile` takes them."""

    prefill: Any
    decode: Any
    args: Any
    donate: tuple[int, ...] = ()
    mesh: dict[str, int] | None = None
    in_specs: Any = None


def serve_steps(steps: Steps, device: str = "v5e", batches: Any = (1, 8, 32), name: str = "model",
                prompt_len: int = 0, gen_len: int = 0) -> ServingReport:
    """TTFT (the prefill's time), TPOT (one decode step's) and decode tokens/s for each batch
    size, with the KV cache (the donated arguments) and the weights (the first argument) per
    device."""
    chip, n = devices_of(device)
    sharding = {"mesh": steps.mesh, "in_specs": steps.in_specs} if steps.mesh else {}
    rows, per_token = [], 0.0
    for b in batches:
        times, fits, peak = [], True, 0
        prefill_args, decode_args = steps.args(b)
        for fn, args in ((steps.prefill, prefill_args), (steps.decode, decode_args)):
            try:
                c = tpu_compile(fn, *args, device=device, donate_argnums=steps.donate, **sharding)
            except OutOfMemoryError:
                fits = False
                c = tpu_compile(fn, *args, device=device, donate_argnums=steps.donate, check_memory=False, **sharding)
            times.append(c.estimate().time_s)
            peak = max(peak, c.program.peak_hbm_bytes)
        kv = sum(_nbytes(decode_args[i]) for i in steps.donate) / n
        per_token = kv / (b * max(1, prompt_len + gen_len))
        rows.append(ServingRow(b, times[0], times[1], b / times[1], kv / 2**30, _nbytes(decode_args[0]) / n / 2**30,
                               peak / 2**30, fits))
    return ServingReport(name, device, prompt_len, gen_len, rows, per_token, chip.device_hbm_bytes)


def _nbytes(tree: Any) -> float:
    return float(sum(np.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree)))


def serve(model: Any, device: str = "v5e", batches: Any = (1, 8, 32), prompt_len: int = 1024, gen_len: int = 256,
          dtype: Any = jnp.bfloat16) -> ServingReport:
    """Prefill and decode estimates for every batch size of a Llama-shaped model (see the module
    docstring); `serve_steps` takes any prefill and decode functions."""
    name, cfg = _config(model)
    batches = [int(b) for b in batches]
    for what, v in (("prompt_len", prompt_len), ("gen_len", gen_len), *(("batch", b) for b in batches)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise TpusimError(f"{what} must be a positive integer, got {v!r}")
    _, n = devices_of(device)
    if n > 1 and cfg.kv_heads % n:
        raise TpusimError(f"tensor parallelism over {n} devices needs kv_heads ({cfg.kv_heads}) divisible by {n}: "
                          f"use a slice of {cfg.kv_heads} devices or fewer")
    params = llama.param_shapes(cfg, dtype)
    pos = jax.ShapeDtypeStruct((), jnp.int32)

    def args(b: int) -> tuple[tuple, tuple]:
        cache = llama.cache_shape(cfg, b, prompt_len + gen_len, dtype)
        return tuple((params, cache, cache, jax.ShapeDtypeStruct((b, t), jnp.int32), pos) for t in (prompt_len, 1))

    mesh, specs = None, None
    if n > 1:
        param_specs, cache_spec = llama.tensor_parallel_specs("model")
        mesh, specs = {"model": n}, (param_specs, cache_spec, cache_spec, None, None)
    steps = Steps(llama.prefill(cfg), llama.decode_step(cfg), args, (1, 2), mesh, specs)
    return serve_steps(steps, device, batches, name, prompt_len, gen_len)


# ---- classic models: latency against batch size --------------------------------------------
@dataclass(frozen=True)
class LatencyRow:
    batch: int
    latency_s: float  # one call on a batch (device time, host dispatch included)
    items_per_s: float
    peak_hbm_gib: float
    fits: bool


class LatencyReport:
    """Latency and throughput of one model call against batch size (the TPU v1 paper's question:
    the largest batch, hence the best throughput, within a response-time limit)."""

    def __init__(self, device: str, rows: list[LatencyRow]) -> None:
        self.device, self.rows = device, rows

    def largest_batch(self, latency_target_s: float | None = None) -> int | None:
        ok = [r.batch for r in self.rows if r.fits and (latency_target_s is None or r.latency_s <= latency_target_s)]
        return max(ok) if ok else None

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.rows]).set_index("batch")

    def table(self, title: str = "") -> Any:
        from rich.table import Table

        t = Table(title=title or f"latency against batch on {self.device} (estimates)")
        for col in ("batch", "latency", "items/s", "peak HBM", "fits"):
            t.add_column(col, justify="right")
        for r in self.rows:
            t.add_row(str(r.batch), f"{r.latency_s * 1e3:.3g} ms", f"{r.items_per_s:,.0f}", f"{r.peak_hbm_gib:.2f} GiB",
                      "yes" if r.fits else "no")
        return t

    def __repr__(self) -> str:
        return f"LatencyReport({self.device}: batches {[r.batch for r in self.rows]})"


def _with_batch(example_args: tuple, batch: int) -> tuple:
    """The example arguments with every leaf that carries the batch (the first array's leading
    dimension) resized to `batch`."""
    leaves = [leaf for leaf in jax.tree.leaves(example_args) if len(getattr(leaf, "shape", ())) > 0]
    if not leaves:
        raise TpusimError("latency against batch needs an array argument whose first dimension is the batch")
    old = leaves[0].shape[0]

    def resize(leaf: Any) -> Any:
        shape = tuple(getattr(leaf, "shape", ()))
        if shape and shape[0] == old:
            return jax.ShapeDtypeStruct((batch, *shape[1:]), leaf.dtype)
        return leaf

    return jax.tree.map(resize, example_args)


def latency_vs_batch(fn_or_model: Any, *example_args: Any, device: str = "v5e", batches: Any = (1, 8, 32, 128),
                     **compile_kw: Any) -> LatencyReport:
    """One call of a classic model (a Keras model or JAX function; its first array argument's
    leading dimension is the batch) at every batch size: latency, items/s, memory fit."""
    batches = [int(b) for b in batches]
    if not batches or any(b <= 0 for b in batches):
        raise TpusimError(f"batch sizes must be positive integers, got {batches}")
    devices_of(device)
    rows = []
    for b in batches:
        args = _with_batch(example_args, b)
        try:
            c = tpu_compile(fn_or_model, *args, device=device, **compile_kw)
            fits = True
        except OutOfMemoryError:
            c = tpu_compile(fn_or_model, *args, device=device, check_memory=False, **compile_kw)
            fits = False
        t = c.estimate().time_s
        rows.append(LatencyRow(b, t, b / t, c.program.peak_hbm_bytes / 2**30, fits))
    return LatencyReport(device, rows)
