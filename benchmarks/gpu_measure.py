"""Time tpusim's GPU validation workloads (tpusim/validation/gpu_workloads.py) on the local GPU
with JAX, and write the measurements `tpusim validate` compares against.

    python benchmarks/gpu_measure.py OUT_DIR [--kinds gemm,attention] [--budget-s 500] [--skip N]
    python benchmarks/gpu_measure.py --collect RUN.json [RUN.json ...] > src/tpusim/validation/data/h100_jax.csv

Every workload is jitted, run once to compile and warm up, then timed two ways:
- device time: the XLA module's span on the GPU from a JAX profiler trace (CUPTI), per call,
  median over the traced calls (what XLA:GPU's own perf tables report for a kernel);
- wall time: back-to-back asynchronous calls, the best of two rounds, per call (includes the
  host's dispatch when the kernel is shorter than it).
Inputs are fresh random data (never zeros). Only JAX is needed: tpusim's own dependencies are
not, so it runs on a bare GPU machine with the repository's src/ beside it.
Prints a table and writes OUT_DIR/gpu_measure.json (one row per workload, with the trace's
per-line summary so the device time can be re-derived).
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# Import tpusim's workload module without tpusim/__init__ (which needs Keras, pydantic, ...).
_pkg = types.ModuleType("tpusim")
_pkg.__path__ = [str(SRC / "tpusim")]
sys.modules.setdefault("tpusim", _pkg)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from tpusim.validation.gpu_workloads import build, family, workloads  # noqa: E402


def _random_args(args: list, key: jax.Array) -> list:
    leaves, tree = jax.tree.flatten(args)
    keys = jax.random.split(key, len(leaves))
    out = []
    for leaf, k in zip(leaves, keys):
        if jnp.issubdtype(leaf.dtype, jnp.integer):
            out.append(jax.random.randint(k, leaf.shape, 0, 1000, leaf.dtype))
        else:
            scale = 0.02 if len(leaf.shape) >= 2 and len(leaves) > 4 else 1.0  # model weights stay small
            out.append((jax.random.normal(k, leaf.shape, jnp.float32) * scale).astype(leaf.dtype))
    return jax.tree.unflatten(tree, out)


def _trace_summary(path: str) -> dict:
    from jax.profiler import ProfileData

    lines = {}
    for plane in ProfileData.from_file(path).planes:
        if not plane.name.startswith("/device:GPU"):
            continue
        for line in plane.lines:
            ev = [(e.start_ns, e.duration_ns, e.name) for e in line.events]
            if ev:
                lines[f"{plane.name}|{line.name}"] = {
                    "events": len(ev), "sum_ns": sum(d for _, d, _ in ev),
                    "span_ns": max(s + d for s, d, _ in ev) - min(s for s, _, _ in ev),
                    "durations_ns": [d for _, d, _ in ev][:64], "first_names": [n for _, _, n in ev[:4]]}
    return lines


def _device_seconds(lines: dict, calls: int) -> float | None:
    """Per call: the median XLA-module event if the trace has a module line, else the kernels' sum."""
    for name, line in lines.items():
        if name.endswith("|XLA Modules") and line["events"] >= calls:
            return statistics.median(line["durations_ns"][-calls:]) * 1e-9
    kernels = [v for n, v in lines.items() if "Stream" in n]
    return sum(v["sum_ns"] for v in kernels) / calls * 1e-9 if kernels else None


def _memory(f, args: list) -> dict:
    """XLA:GPU's buffer assignment for the program (bytes), and the allocator's peak so far."""
    try:
        m = f.lower(*args).compile().memory_analysis()
        out = {k: int(getattr(m, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                                "temp_size_in_bytes", "alias_size_in_bytes",
                                                "generated_code_size_in_bytes") if hasattr(m, k)}
    except Exception as e:  # noqa: BLE001 - a missing analysis leaves the timing
        out = {"error": str(e)[:200]}
    stats = jax.devices()[0].memory_stats() or {}
    out["peak_bytes_in_use"] = int(stats.get("peak_bytes_in_use", 0))
    return out


def measure(spec: tuple, key: jax.Array) -> dict:
    fn, shapes = build(spec)
    args = _random_args(shapes, key)
    f = jax.jit(fn)
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    compile_s = time.perf_counter() - t0
    memory = _memory(f, args)
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    once = time.perf_counter() - t0
    calls = int(min(100, max(3, 0.1 / max(once, 1e-6))))
    rounds = []
    for _ in range(2):
        t0 = time.perf_counter()
        out = None
        for _ in range(calls):
            out = f(*args)
        jax.block_until_ready(out)
        rounds.append((time.perf_counter() - t0) / calls)
    traced = min(calls, 10)
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            for _ in range(traced):
                out = f(*args)
            jax.block_until_ready(out)
        files = glob.glob(d + "/**/*.xplane.pb", recursive=True)
        lines = _trace_summary(files[0]) if files else {}
    return {"spec": list(spec), "family": family(spec), "wall_s": min(rounds), "calls": calls,
            "device_s": _device_seconds(lines, traced), "traced_calls": traced, "compile_s": compile_s,
            "memory": memory, "trace_lines": lines}


def _per_call_seconds(row: dict) -> float | None:
    """The median per-call device time: kernel durations grouped by call where the trace kept
    every event (the first 64 per line), else the traced calls' mean."""
    lines = [v for n, v in row.get("trace_lines", {}).items() if "Stream" in n]
    calls = row.get("traced_calls") or 0
    if len(lines) != 1 or not calls:
        return row.get("device_s")
    line = lines[0]
    per_call = line["events"] // calls
    if line["events"] != per_call * calls or line["events"] > len(line["durations_ns"]):
        return line["sum_ns"] / calls * 1e-9
    d = line["durations_ns"]
    return statistics.median(sum(d[i * per_call:(i + 1) * per_call]) for i in range(calls)) * 1e-9


def collect(paths: list[str]) -> None:
    """Merge measurement runs into the CSV `tpusim validate` reads: per workload, the median over
    runs of each run's per-call device time, and XLA:GPU's buffer sizes where measured."""
    import csv

    by: dict[str, list[dict]] = {}
    meta = {}
    for p in paths:
        data = json.loads(Path(p).read_text())
        meta = data["meta"]
        for row in data["rows"]:
            if "error" not in row:
                by.setdefault(json.dumps(row["spec"]), []).append(row)
    gpu, driver = (x.strip() for x in meta["gpu"].split(",")[:2])
    out = csv.writer(sys.stdout, lineterminator="\n")
    mem_keys = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes")
    out.writerow(["spec", "family", "device_us", "wall_us", "runs", *("xla_gpu_" + k for k in mem_keys),
                  "gpu", "driver", "jax", "date", "script"])
    for spec in sorted(by, key=lambda s: [str(x) for x in json.loads(s)]):
        rows = by[spec]
        mem = next((r["memory"] for r in rows if "memory" in r and "error" not in r["memory"]), {})
        out.writerow([spec, rows[0]["family"], f"{statistics.median(_per_call_seconds(r) for r in rows) * 1e6:.3f}",
                      f"{statistics.median(r['wall_s'] for r in rows) * 1e6:.3f}", len(rows),
                      *(mem.get(k, "") for k in mem_keys), gpu, driver, meta["jax"], meta["date"],
                      "benchmarks/gpu_measure.py"])


def main() -> None:
    if sys.argv[1:2] == ["--collect"]:
        return collect(sys.argv[2:])
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--kinds", default="", help="comma-separated workload kinds (default: all)")
    ap.add_argument("--budget-s", type=float, default=540.0)
    ap.add_argument("--skip", type=int, default=0, help="skip the first N selected workloads (resume)")
    ns = ap.parse_args()
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    kinds = set(filter(None, ns.kinds.split(",")))
    order = ns.kinds.split(",")
    specs = sorted((s for s in workloads() if not kinds or s[0] in kinds),
                   key=lambda s: order.index(s[0]) if kinds else 0)  # stable: the kinds in the order given
    specs = specs[ns.skip:]
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,power.limit",
                          "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    meta = {"date": time.strftime("%Y-%m-%d"), "gpu": smi, "jax": jax.__version__,
            "device": str(jax.devices()[0]), "device_kind": jax.devices()[0].device_kind}
    rows, start = [], time.perf_counter()
    key = jax.random.key(0)
    for i, spec in enumerate(specs):
        if time.perf_counter() - start > ns.budget_s:
            print(f"budget reached: {len(specs) - i} workloads not timed", flush=True)
            break
        key, sub = jax.random.split(key)
        try:
            row = measure(spec, sub)
        except Exception as e:  # noqa: BLE001 - one failing workload must not lose the others
            row = {"spec": list(spec), "family": family(spec), "error": f"{type(e).__name__}: {str(e)[:300]}"}
        rows.append(row)
        (out / "gpu_measure.json").write_text(json.dumps({"meta": meta, "rows": rows}))
        dev = row.get("device_s")
        print(f"{str(spec):70s} {row.get('wall_s', float('nan')) * 1e6:10.1f} us wall "
              f"{(dev or float('nan')) * 1e6:10.1f} us device {row.get('error', '')[:60]}", flush=True)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
