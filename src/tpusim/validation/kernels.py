"""Measured single-chip kernels: rebuild each timed workload, estimate it, compare, and fit the
per-generation calibration (sim/calibration.yaml) on stated subsets.

Data (validation/data/, every row with its source repository, commit and path):
- TPU v4, SCALE-Sim-validation: 1,839 float16 `jnp.matmul` GEMMs (device-side XLA fusion time)
  and ~5,800 elementwise, activation, norm and pooling kernels (device-side op or module time).
- TPU7x and v6e, tpu-recipes microbenchmarks: bf16 GEMMs and HBM copies vs size.
- GPUs, XLA:GPU's own measured matmul tables (openxla/xla, ROCm/xla): 2,250 batched GEMMs
  (b in {1,2,4}; M, N, K in 256..4096) on H100 (bf16, f32 as TF32), B200 (bf16, TF32, fp8) and
  an MI300X-class gfx942 (bf16), each the median CUPTI kernel time of an XLA-compiled dot.
- H100 SXM, timed by this project (benchmarks/gpu_measure.py, JAX on a lent GPU): GEMMs of five
  operand types, elementwise and reduction fusions, attention (plain JAX, XLA and cuDNN), ResNet
  convolutions and whole training steps (MLP, ResNet-50, GPT), each the CUPTI kernel time of the
  jitted program per call. The workloads are gpu_workloads.py's, estimated here unchanged.

`FIT_SUBSETS` says which rows fit which constant; every other row is held out, and the report
gives in-sample and held-out error separately, by family. Compiled workloads are cached, so a
refit only re-runs the timing model.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from statistics import median
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import yaml

from tpusim.sim.calibration import Calibration, calibration_of

DATA = Path(__file__).parent / "data"
V4_SOURCE = "scalesim-project/SCALE-Sim-validation (MIT)"
XLA_GPU_SOURCE = "XLA:GPU matmul perf table (openxla/xla via ROCm/xla, Apache-2.0)"
_GPU_RATE = {"bfloat16": "bf16", "float32": "tf32", "float8_e4m3fn": "fp8"}


@dataclass(frozen=True)
class Row:
    """One measured kernel: what ran, on which chip, how long it took, and where it was published."""

    id: str
    chip: str
    family: str
    subset: str  # the sweep/dataset it belongs to (fit subsets are named by it)
    build: tuple  # hashable workload description, see `workload`
    measured_s: float
    source: str


# ---- the measured rows ----------------------------------------------------------------------
def _v4_gemms() -> list[Row]:
    rows = []
    with open(DATA / "tpu_v4_gemm.csv") as f:
        for r in csv.DictReader(f):
            m, n, k = int(r["m"]), int(r["n"]), int(r["k"])
            rows.append(Row(f"v4-{r['sweep']}-{m}x{n}x{k}", "v4", "v4 GEMM f16", r["sweep"],
                            ("matmul", m, n, k, r["dtype"]), float(r["mean_us"]) * 1e-6,
                            f"{V4_SOURCE} @{r['source_commit'][:8]} {r['source_path']}"))
    return rows


_VECTOR_FAMILY = {"add": "elementwise", "sub": "elementwise", "mul": "elementwise", "div": "elementwise",
                  "layer_norm": "norm", "rms_norm": "norm", "batch_norm_inference": "norm",
                  "max_pooling": "pooling", "avg_pooling": "pooling"}


def _gpu_gemms() -> list[Row]:
    rows = []
    with open(DATA / "gpu_xla_gemm.csv") as f:
        for r in csv.DictReader(f):
            b, m, n, k = (int(r[x]) for x in "bmnk")
            flops = 2 * b * m * n * k
            rows.append(Row(f"{r['chip']}-xla-{r['dtype']}-{b}x{m}x{n}x{k}", r["chip"],
                            f"{r['chip']} GEMM {_GPU_RATE[r['dtype']]}", f"{r['chip']}-{r['dtype']}-b{b}",
                            ("bmm", b, m, n, k, r["dtype"]), flops / float(r["published_flops_per_s"]),
                            f"{XLA_GPU_SOURCE} @{r['source_commit'][:10]} {r['source_path']} ({r['xla_device']})"))
    return rows


def _gpu_timed() -> list[Row]:
    import json

    from tpusim.validation.gpu_workloads import family

    rows = []
    with open(DATA / "h100_jax.csv") as f:
        for r in csv.DictReader(f):
            spec = tuple(tuple(x) if isinstance(x, list) else x for x in json.loads(r["spec"]))
            chip = "h100"  # the 80 GB SXM part the rows name
            rows.append(Row(f"{chip}-jax-" + "-".join(str(x) for x in spec), chip, f"{chip} {family(spec)} (JAX)",
                            f"{chip}-jax-{spec[0]}", ("gpu", spec), float(r["device_us"]) * 1e-6,
                            f"timed by tpusim's {r['script']} on {r['gpu']} (driver {r['driver']}), JAX {r['jax']}, "
                            f"{r['date']}: CUPTI kernel time per call, median"))
    return rows


def _v4_vector_ops() -> list[Row]:
    rows = []
    with open(DATA / "tpu_v4_vector_ops.csv") as f:
        for r in csv.DictReader(f):
            shape = tuple(int(s) for s in r["shape"].split("x"))
            family = "v4 " + _VECTOR_FAMILY.get(r["op"], "activation")
            rows.append(Row(f"v4-{r['dataset']}-{r['op']}-{r['shape']}", "v4", family, r["dataset"],
                            (r["op"], shape, r["dtype"], r["op_params"]), float(r["mean_us"]) * 1e-6,
                            f"{V4_SOURCE} @{r['source_commit'][:8]} {r['source_path']} ({r['scope']})"))
    return rows


def _parse_published(text: str, row: dict[str, Any]) -> float:
    """Seconds from a published value: a time ('1.32 ms'), a GEMM rate or a copy bandwidth."""
    value, unit = text.split(" ", 1)
    v = float(value)
    if unit == "ms":
        return v * 1e-3
    if unit.startswith("TFLOP/s"):
        return 2 * row["m"] ** 3 / (v * 1e12)
    if unit.startswith("GB/s"):
        return 2 * row["bytes"] / (v * 1e9)
    raise ValueError(f"unknown unit in {text!r}")


def _microbench() -> list[Row]:
    data = yaml.safe_load((DATA / "microbench.yaml").read_text())
    rows = []
    for i, r in enumerate(data["rows"]):
        src = f"{r['source']}: {data['sources'][r['source']]}"
        t = _parse_published(r["published"], r)
        if r["kind"] == "gemm":
            build: tuple = ("matmul", r["m"], r["m"], r["m"], "bfloat16")
            name = f"{r['m']}^3"
        else:
            build = ("copy", (r["bytes"] // 2,), "bfloat16", "")
            name = f"{r['bytes'] / 2**20:g}MiB"
        fam = f"{r['chip']} {'GEMM bf16' if r['kind'] == 'gemm' else 'HBM copy'}"
        rows.append(Row(f"{r['chip']}-{r['kind']}-{name}-{i}", r["chip"], fam, f"{r['chip']}-{r['kind']}", build, t, src))
    return rows


@lru_cache(maxsize=1)
def measured_rows() -> tuple[Row, ...]:
    return tuple(_v4_gemms() + _v4_vector_ops() + _microbench() + _gpu_gemms() + _gpu_timed())


# ---- which rows fit which constant ----------------------------------------------------------
def _min_dim(row: Row) -> int:
    if row.build[0] == "bmm":
        return min(row.build[2:5])
    return min(row.build[1:4]) if row.build[0] == "matmul" else 0


def _timed_elementwise(row: Row, lo: int, hi: int) -> bool:
    """A GPU-timed elementwise kernel (gpu_workloads' loop fusions) of lo..hi elements."""
    if row.build[0] != "gpu" or row.family.split(" ", 1)[1] != "elementwise (JAX)":
        return False
    return lo <= math.prod(row.build[1][1]) <= hi


def _gpu_subset(chip: str, dtype: str, predicate: Callable[[Row], bool] = lambda r: True) -> Callable[[Row], bool]:
    """The batch-1 GEMMs of one GPU and dtype (b=2 and b=4 are held out), narrowed by `predicate`."""
    return lambda r: r.subset == f"{chip}-{dtype}-b1" and predicate(r)


def _gemm_volume(row: Row) -> int:
    return math.prod(row.build[2:5]) if row.build[0] == "bmm" else 0


def _elements(row: Row) -> int:
    return math.prod(row.build[1]) if row.build[0] != "matmul" else 0


# (generation, constant, description, predicate). Fitted in this order; each by minimizing the
# median |log(predicted/measured)| over its subset with the constants before it fixed.
FIT_SUBSETS: list[tuple[str, str, str, Callable[[Row], bool]]] = [
    ("v4", "kernel_floor_s", "the 256 1-D adds of 32..8192 elements (data_add_1d_1)",
     lambda r: r.subset == "data_add_1d_1"),
    ("v4", "one_core_hbm_fraction", "the 2-D adds of 64x64..1024x1024 (data_add_2d_1; XLA runs a bare add on one core)",
     lambda r: r.subset == "data_add_2d_1"),
    ("v4", "hbm_efficiency", "the 20 batch-norm inference kernels moving >= 512 MiB (data_batch_norm; two-core fusions)",
     lambda r: r.subset == "data_batch_norm" and math.prod(r.build[1]) * 6 >= 2**29),
    ("v4", "f16_convert_cycles", "the float16 GEMMs with M, N, K >= 2048 in matmul_new_4096",
     lambda r: r.subset == "matmul_new_4096" and _min_dim(r) >= 2048),
    ("v4", "mxu_fill_share", "the 125 GEMMs with M, N, K in {2, 8, 32, 128, 512} (trace_matmul_single)",
     lambda r: r.subset == "trace_matmul_single"),
    ("tpu7x", "kernel_floor_s", "the 128^3 and 256^3 GEMMs (the smallest kernels timed)",
     lambda r: r.subset == "tpu7x-gemm" and _min_dim(r) <= 256),
    ("tpu7x", "hbm_efficiency", "the HBM copies of 1 GiB and more",
     lambda r: r.subset == "tpu7x-copy" and _elements(r) >= 2**29),
    ("tpu7x", "mxu_efficiency", "the 16384^3 and 32768^3 GEMMs", lambda r: r.subset == "tpu7x-gemm" and _min_dim(r) >= 16384),
    ("v6e", "hbm_efficiency", "the current 32 MiB HBM copy", lambda r: r.id == "v6e-copy-32MiB-24"),
    ("v6e", "mxu_efficiency", "the current 8192^3 GEMM", lambda r: r.id == "v6e-gemm-8192^3-21"),
]
# GPUs: per architecture, on the batch-1 GEMMs of XLA's table (b=2 and b=4, fp8, and the other
# dtypes' batched rows are held out), in this order from a neutral start (see `fit`).
GPU_FITTED = ("h100", "b200", "mi300x")
# Where a GPU's one-pass fit starts: a 5 us kernel floor, 1 us per wave of tiles, 85% of the
# tensor-core peak (round figures; the fit then moves each constant on its own subset).
GPU_FIT_START = {"kernel_floor_s": 5e-6, "wave_latency_s": 1e-6, "mxu_efficiency": 0.85, "tf32_efficiency": 0.0}
for _chip in GPU_FITTED:
    FIT_SUBSETS += [
        (_chip, "kernel_floor_s", "the bf16 GEMMs with b=1 and M x N x K <= 512 x 512 x 256",
         _gpu_subset(_chip, "bfloat16", lambda r: _gemm_volume(r) <= 512 * 512 * 256)),
        (_chip, "mxu_efficiency", "the bf16 GEMMs with b=1 and M, N, K >= 2048",
         _gpu_subset(_chip, "bfloat16", lambda r: _min_dim(r) >= 2048)),
        (_chip, "wave_latency_s", "the 125 bf16 GEMMs with b=1", _gpu_subset(_chip, "bfloat16")),
    ]
    if _chip != "mi300x":
        FIT_SUBSETS.append((_chip, "tf32_efficiency", "the 125 f32 (TF32) GEMMs with b=1", _gpu_subset(_chip, "float32")))
def _timed_flash_forward(row: Row) -> bool:
    """A GPU-timed cuDNN attention forward without a mask (causal ones and gradients are held out)."""
    spec = row.build[1] if row.build[0] == "gpu" else ()
    return spec[:2] == ("attention", "cudnn") and not spec[6] and not spec[7]


# The H100 kernels this project timed: the smallest and the largest elementwise fusions, and the
# cuDNN attention forwards without a mask (every other timed kernel, reductions, causal and
# backward attention, convolutions and training steps included, is held out).
FIT_SUBSETS += [
    ("h100", "loop_floor_s", "the 18 elementwise fusions of 64Ki and 256Ki elements timed on an H100 (h100_jax.csv)",
     lambda r: _timed_elementwise(r, 0, 2**18)),
    ("h100", "hbm_efficiency", "the 18 elementwise fusions of 64Mi and 256Mi elements timed on an H100 (h100_jax.csv)",
     lambda r: _timed_elementwise(r, 2**26, 2**28)),
    ("h100", "attention_overlap", "the 5 cuDNN flash attention forwards without a mask timed on an H100 (h100_jax.csv)",
     _timed_flash_forward),
]


def fit_role(row: Row) -> str | None:
    for gen, const, _, pred in FIT_SUBSETS:
        if row.chip == gen and pred(row):
            return const
    return None


# ---- workloads ------------------------------------------------------------------------------
def _constants(shape: tuple[int, ...], axis: int) -> tuple[jax.Array, jax.Array]:
    n = shape[axis]
    return jnp.ones((n,), jnp.float32), jnp.zeros((n,), jnp.float32)


def workload(build: tuple) -> tuple[Callable, list[jax.ShapeDtypeStruct]]:
    """The JAX function and argument shapes that the measurement timed (as its source code
    describes it: see the data README)."""
    kind = build[0]
    if kind == "gpu":
        from tpusim.validation.gpu_workloads import build as gpu_build

        return gpu_build(build[1], traceable=True)
    if kind == "bmm":
        _, b, m, n, k, dtype = build
        return (lambda x, y: jnp.matmul(x, y)), [jax.ShapeDtypeStruct((b, m, k), dtype), jax.ShapeDtypeStruct((b, k, n), dtype)]
    if kind == "matmul":
        _, m, n, k, dtype = build
        return (lambda a, b: jnp.matmul(a, b)), [jax.ShapeDtypeStruct((m, k), dtype), jax.ShapeDtypeStruct((k, n), dtype)]
    _, shape, dtype, params = build
    x = jax.ShapeDtypeStruct(shape, dtype)
    eps = 1e-5
    if kind in ("add", "sub", "mul", "div"):
        fn = {"add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply, "div": jnp.divide}[kind]
        return fn, [x, x]
    unary: dict[str, Callable] = {
        "copy": jnp.copy, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh,
        "elu": lambda v: jax.nn.elu(v, 1.0), "selu": jax.nn.selu,
        "leaky_relu": lambda v: jax.nn.leaky_relu(v, 0.1),
        "parametric_relu": lambda v: jnp.where(v >= 0, v, 0.25 * v),
        "binary_step": lambda v: jnp.where(v >= 0.0, 1.0, 0.0).astype(v.dtype),
        "linear": lambda v: v * 1.0 + 0.0,
    }
    if kind in unary:
        return unary[kind], [x]
    if kind == "layer_norm":
        def layer_norm(v):
            gamma, beta = _constants(shape, -1)
            mean = jnp.mean(v, axis=-1, keepdims=True)
            var = jnp.mean((v - mean) ** 2, axis=-1, keepdims=True)
            return (v - mean) / jnp.sqrt(var + eps) * gamma + beta
        return layer_norm, [x]
    if kind == "rms_norm":
        def rms_norm(v):
            gamma, _ = _constants(shape, -1)
            return v / jnp.sqrt(jnp.mean(v * v, axis=-1, keepdims=True) + eps) * gamma
        return rms_norm, [x]
    if kind == "batch_norm_inference":
        def batch_norm(v):
            gamma, beta = _constants(shape, 1)
            mean, var = jnp.zeros_like(gamma), jnp.ones_like(gamma)
            c = (1, -1, 1, 1)
            return (v - mean.reshape(c)) / jnp.sqrt(var.reshape(c) + eps) * gamma.reshape(c) + beta.reshape(c)
        return batch_norm, [x]
    if kind in ("max_pooling", "avg_pooling"):
        init, op = (-jnp.inf, jax.lax.max) if kind == "max_pooling" else (0.0, jax.lax.add)

        def pool(v):
            out = jax.lax.reduce_window(v, init, op, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
            return out if kind == "max_pooling" else out / 4
        return pool, [x]
    raise ValueError(f"no workload for measured kernel kind {kind!r}")


def base_calibration(chip: str) -> Calibration:
    """The shipped calibration a measured chip is timed with (a GPU's falls back to the GPU default)."""
    from tpusim.hardware.chip import resolve_device

    return calibration_of(resolve_device(chip))


@lru_cache(maxsize=None)
def _compiled(build: tuple, chip: str) -> Any:
    from tpusim.api import compile as tpu_compile

    fn, args = workload(build)
    options = {}
    if build[0] == "gpu":
        from tpusim.validation.gpu_workloads import compile_options

        options = compile_options(build[1])
    return tpu_compile(fn, *args, device=chip, check_memory=False, **options)


def predict(row: Row, calibration: Calibration | None = None) -> float:
    from tpusim.hardware.chip import resolve_device
    from tpusim.sim.estimate import estimate_program
    from tpusim.sim.timing import DEFAULT_CONSTANTS

    compiled = _compiled(row.build, row.chip)
    cal = calibration or base_calibration(row.chip)
    return estimate_program(compiled.program, resolve_device(row.chip), 0.0, DEFAULT_CONSTANTS,
                            calibration=cal).time_s


# ---- fitting and reporting ------------------------------------------------------------------
def _log_error(rows: Iterable[Row], cal: Calibration) -> float:
    return median(abs(math.log(predict(r, cal) / r.measured_s)) for r in rows)


def _fit_one(rows: list[Row], cal: Calibration, name: str) -> Calibration:
    """1-D search (log-spaced, then golden section) of the constant minimizing the subset's
    median |log error|."""
    lo, hi = {"kernel_floor_s": (1e-8, 5e-6), "loop_floor_s": (1e-7, 1e-5), "mxu_fill_share": (1e-4, 1.5),
              "wave_latency_s": (1e-8, 1e-5), "one_core_hbm_fraction": (0.05, 1.0),
              "f16_convert_cycles": (0.1, 40.0), "attention_overlap": (0.01, 1.0)}.get(name, (0.05, 1.5))
    if name == "kernel_floor_s" and rows and rows[0].build[0] == "bmm":
        lo, hi = 1e-7, 2e-5  # a GPU kernel's floor is several microseconds
    score = lambda v: _log_error(rows, replace(cal, **{name: v}))  # noqa: E731
    grid = [lo * (hi / lo) ** (i / 24) for i in range(25)]
    best = min(grid, key=score)
    a, b = best / (hi / lo) ** (1 / 24), best * (hi / lo) ** (1 / 24)
    g = (math.sqrt(5) - 1) / 2
    for _ in range(30):
        c, d = b - g * (b - a), a + g * (b - a)
        if score(c) < score(d):
            b = d
        else:
            a = c
    return replace(cal, **{name: float(f"{(a + b) / 2:.4g}")})


def fit(rows: Iterable[Row] | None = None) -> dict[str, Calibration]:
    """Refit every constant of FIT_SUBSETS on its subset, in order, one pass. Returns the
    calibration per generation. A GPU's constants start from GPU_FIT_START rather than the
    shipped values, so the fit does not depend on them (floor and wave latency trade off on
    one-wave GEMMs: the start breaks the tie)."""
    rows = list(rows or measured_rows())
    cals: dict[str, Calibration] = {}
    for gen, const, _, pred in FIT_SUBSETS:
        cal = cals.get(gen) or base_calibration(gen)
        if gen in GPU_FITTED and gen not in cals:
            cal = replace(cal, **GPU_FIT_START)
        subset = [r for r in rows if r.chip == gen and pred(r)]
        if subset:
            cals[gen] = _fit_one(subset, cal, const)
    return cals


@dataclass
class Result:
    row: Row
    predicted_s: float
    role: str | None

    @property
    def error(self) -> float:
        return (self.predicted_s - self.row.measured_s) / self.row.measured_s


def evaluate(rows: Iterable[Row] | None = None, calibrations: dict[str, Calibration] | None = None) -> list[Result]:
    cals = calibrations or {}
    return [Result(r, predict(r, cals.get(r.chip)), fit_role(r)) for r in (rows or measured_rows())]


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(results: list[Result]) -> list[dict[str, Any]]:
    """One line per family: rows, median |error| in sample and held out, the held-out p90 and
    max, and the held-out share within 10% / 25%."""
    out = []
    for fam in sorted({r.row.family for r in results}):
        fr = [r for r in results if r.row.family == fam]
        held = [abs(r.error) for r in fr if r.role is None]
        fitted = [abs(r.error) for r in fr if r.role is not None]
        out.append({"family": fam, "rows": len(fr), "fitted_rows": len(fitted),
                    "fit_median": median(fitted) if fitted else None,
                    "held_out_median": median(held) if held else None,
                    "held_out_p90": _quantile(held, 0.9) if held else None,
                    "held_out_max": max(held) if held else None,
                    "held_within_10": sum(e <= 0.10 for e in held) / len(held) if held else None,
                    "held_within_25": sum(e <= 0.25 for e in held) / len(held) if held else None})
    return out
