"""Chrome / Perfetto trace of an estimate, laid out as XProf lays out a TPU's trace.

One process per device named as XProf names device planes ("/device:TPU:0"), with XProf's
lines: "Steps" (the step), "XLA Modules" (the compiled program), "XLA Ops" (every kernel, with
XProf's op stats: hlo_category, flops, bytes_accessed, source) and "Async XLA Ops" (the
collectives), then one track per matrix unit, the vector unit and the DMA engines, and a
counter track of HBM in use. Open the JSON in https://ui.perfetto.dev, chrome://tracing or
XProf's trace viewer. Times are the model's (report/timeline.py says how they are laid out).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tpusim.compiler.allocate import live_profile
from tpusim.report.timeline import ASYNC_TRACK, OPS_TRACK, Segment, segments, tracks
from tpusim.sim.estimate import Estimate, timer_for

if TYPE_CHECKING:
    from tpusim.api import Compiled

# What XProf calls each kind of kernel (its hlo_category stat); the op profile groups by it.
HLO_CATEGORY = {"matmul": "convolution fusion", "conv": "convolution fusion", "loop": "loop fusion",
                "window": "reduce-window", "gather": "gather", "random": "rng", "movement": "data formatting",
                "scan": "while", "while": "while", "cond": "conditional", "collective": "collective",
                "transfer": "host transfer"}


_PLANE_KIND = {"tpu": "TPU", "gpu": "GPU", "cpu": "CPU"}


def device_plane_name(kind: str, index: int = 0) -> str:
    """XProf's name for a device's plane: /device:TPU:0."""
    return f"/device:{_PLANE_KIND.get(kind, 'CPU')}:{index}"


def trace_events(est: Estimate, n_mxu: int, module: str = "tpusim_program", device_kind: str = "tpu",
                 hbm_in_use: list[tuple[float, int]] | None = None, vector_unit: str = "VPU") -> dict[str, Any]:
    """`hbm_in_use`: (time in seconds, bytes) points for the counter track."""
    us = 1e6
    names = ["Steps", "XLA Modules", *tracks(n_mxu, est.matrix_unit, vector_unit)]
    tid = {name: i for i, name in enumerate(names)}
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": 1, "args": {"name": f"{device_plane_name(device_kind)} "
                                                                      f"(tpusim estimate: {est.device})"}}]
    for name, i in tid.items():
        events.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": i, "args": {"name": name}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": 1, "tid": i, "args": {"sort_index": i}})
    events.append({"name": "0", "ph": "X", "pid": 1, "tid": tid["Steps"], "ts": 0.0, "dur": est.time_s * us,
                   "args": {"step_num": 0}})
    events.append({"name": module, "ph": "X", "pid": 1, "tid": tid["XLA Modules"], "ts": 0.0, "dur": est.time_s * us})
    for seg in segments(est, n_mxu, vector_unit):
        event = {"name": seg.name, "ph": "X", "pid": 1, "tid": tid[seg.track], "ts": seg.start_s * us,
                 "dur": seg.dur_s * us}
        if seg.track in (OPS_TRACK, ASYNC_TRACK):
            event["args"] = _op_stats(seg)
        events.append(event)
    for t, nbytes in hbm_in_use or []:
        events.append({"name": "HBM in use", "ph": "C", "pid": 1, "ts": t * us, "args": {"GiB": nbytes / 2**30}})
    return {"traceEvents": events, "displayTimeUnit": "ns"}


def _op_stats(seg: Segment) -> dict[str, Any]:
    op = seg.kt
    stats: dict[str, Any] = {"hlo_category": HLO_CATEGORY.get(op.kind, op.kind), "flops": op.flops,
                             "bytes_accessed": op.bytes, "bound": op.bound, "source": op.where}
    if op.hidden_s:
        stats["hidden_us"] = op.hidden_s * 1e6
    return stats


def write_trace(est: Estimate, n_mxu: int, path: str | Path, **kw: Any) -> Path:
    path = Path(path)
    path.write_text(json.dumps(trace_events(est, n_mxu, **kw)))
    return path


def write_compiled_trace(compiled: "Compiled", path: str | Path) -> Path:
    """The trace of a compiled model's estimate, with its HBM-in-use counter track."""
    est = compiled.estimate()
    timer = timer_for(compiled.chip)
    program = compiled.program
    in_use = live_profile(program.allocations, len(program.kernels))
    points = [(op.start_s, b) for op, b in zip(est.ops, in_use)] + ([(est.time_s, in_use[-1])] if in_use else [])
    return write_trace(est, timer.matrix_units, path, module=f"jit_{compiled.name}", device_kind=compiled.chip.kind,
                       hbm_in_use=points, vector_unit=timer.vector_unit)
