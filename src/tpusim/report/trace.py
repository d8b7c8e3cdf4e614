"""Chrome / Perfetto trace of an estimate: one track per MXU, the VPU, DMA, collectives and the
kernels (a collective's bar spans its full duration, the part hidden behind compute included).

Open the JSON in https://ui.perfetto.dev or chrome://tracing. Times are the model's, not a
measurement: within a kernel, DMA starts after the launch overhead and the MXUs and VPU run
in the double-buffered steady state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tpusim.sim.estimate import Estimate
from tpusim.sim.timing import KernelTime

MAX_LOOP_ITERATIONS_TRACED = 20


def _events(op: KernelTime, t0: float, n_mxu: int, out: list[dict[str, Any]]) -> None:
    us = 1e6
    args = {"flops": op.flops, "bytes": op.bytes, "bound": op.bound, "where": op.where}
    out.append({"name": op.name, "ph": "X", "pid": 1, "tid": 0, "ts": t0 * us, "dur": op.time_s * us, "args": args})
    if op.children:
        body = sum(c.time_s for c in op.children)
        iterations = int(round((op.time_s / body))) if body else 1
        t = t0
        for _ in range(min(iterations, MAX_LOOP_ITERATIONS_TRACED)):
            for child in op.children:
                _events(child, t, n_mxu, out)
                t += child.time_s
            t += (op.time_s - body * iterations) / max(1, iterations)
        return
    if op.kind == "collective":
        out.append({"name": op.name, "ph": "X", "pid": 1, "tid": 3 + n_mxu, "ts": t0 * us,
                    "dur": (op.time_s + op.hidden_s) * us, "args": {"hidden_s": op.hidden_s}})
        return
    start = t0 + op.overhead_s
    if op.mxu_s:
        for m in range(n_mxu):
            out.append({"name": op.name, "ph": "X", "pid": 1, "tid": 1 + m, "ts": start * us, "dur": op.mxu_s * us})
    if op.vpu_s:
        out.append({"name": op.name, "ph": "X", "pid": 1, "tid": 1 + n_mxu, "ts": start * us, "dur": op.vpu_s * us})
    if op.dma_s:
        out.append({"name": op.name, "ph": "X", "pid": 1, "tid": 2 + n_mxu, "ts": (t0 + op.overhead_s / 2) * us, "dur": op.dma_s * us})


def trace_events(est: Estimate, n_mxu: int) -> dict[str, Any]:
    events: list[dict[str, Any]] = []
    names = {0: "kernels"} | {1 + m: f"MXU {m}" for m in range(n_mxu)} | {1 + n_mxu: "VPU", 2 + n_mxu: "DMA (HBM<->VMEM)",
                                                                           3 + n_mxu: "ICI / DCN collectives"}
    for tid, name in names.items():
        events.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": name}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": 1, "tid": tid, "args": {"sort_index": tid}})
    events.append({"name": "process_name", "ph": "M", "pid": 1, "args": {"name": f"tpusim {est.device}"}})
    for op in est.ops:
        _events(op, op.start_s, n_mxu, events)
    return {"traceEvents": events, "displayTimeUnit": "ns"}


def write_trace(est: Estimate, n_mxu: int, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(trace_events(est, n_mxu)))
    return path
