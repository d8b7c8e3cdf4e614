"""Serving an LLM: time to first token, time per output token and throughput against batch
size, and what is left for the KV cache.

`serve(model, device, batches=[...], prompt_len=, gen_len=)` compiles the model's prefill (the
prompt, filling the KV cache) and its decode step (one token per sequence, attending to a cache
of prompt_len + gen_len positions) for every batch size, on one chip or, tensor-parallel, on a
slice or GPU node ("v5e-8", "h100-8"). `model` is a Llama-shaped config (a name such as
"llama3-8b" or a `tpusim.models.llama.LlamaConfig`).
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


def serve(model: Any, device: str = "v5e", batches: Any = (1, 8, 32), prompt_len: int = 1024, gen_len: int = 256,
          dtype: Any = jnp.bfloat16) -> ServingReport:
    """Prefill and decode estimates for every batch size (see the module docstring)."""
    name, cfg = _config(model)
    batches = [int(b) for b in batches]
    for what, v in (("prompt_len", prompt_len), ("gen_len", gen_len), *(("batch", b) for b in batches)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise TpusimError(f"{what} must be a positive integer, got {v!r}")
    chip, n = devices_of(device)
    if n > 1 and cfg.kv_heads % n:
        raise TpusimError(f"tensor parallelism over {n} devices needs kv_heads ({cfg.kv_heads}) divisible by {n}: "
                          f"use a slice of {cfg.kv_heads} devices or fewer")
    params = llama.param_shapes(cfg, dtype)
    sharding: dict[str, Any] = {}
    if n > 1:
        param_specs, cache_spec = llama.tensor_parallel_specs("model")
        sharding = {"mesh": {"model": n}, "in_specs": (param_specs, cache_spec, cache_spec, None, None)}
    itemsize = np.dtype(dtype).itemsize
    kv_per_token = 2 * cfg.layers * cfg.kv_heads * cfg.head_dim * itemsize / n
    weights = cfg.params * itemsize / n
    pos = jax.ShapeDtypeStruct((), jnp.int32)
    rows = []
    for b in batches:
        cache = llama.cache_shape(cfg, b, prompt_len + gen_len, dtype)
        times, fits, peak = [], True, 0
        for fn, tokens in ((llama.prefill(cfg), prompt_len), (llama.decode_step(cfg), 1)):
            args = (params, cache, cache, jax.ShapeDtypeStruct((b, tokens), jnp.int32), pos)
            try:
                c = tpu_compile(fn, *args, device=device, donate_argnums=(1, 2), **sharding)
            except OutOfMemoryError:
                fits = False
                c = tpu_compile(fn, *args, device=device, donate_argnums=(1, 2), check_memory=False, **sharding)
            times.append(c.estimate().time_s)
            peak = max(peak, c.program.peak_hbm_bytes)
        rows.append(ServingRow(b, times[0], times[1], b / times[1], kv_per_token * b * (prompt_len + gen_len) / 2**30,
                               weights / 2**30, peak / 2**30, fits))
    return ServingReport(name, device, prompt_len, gen_len, rows, kv_per_token, chip.device_hbm_bytes)
