"""Everything the HTML report shows, as plain JSON-ready data (report/html_report.py draws it).

The views follow XProf's (overview, op profile, trace viewer, roofline, memory viewer) plus
the compiled stages linked to the user's source lines, the collectives of a slice per mesh
axis, and the learner views (report/learner.py).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tpusim.hardware.prices import price_of
from tpusim.report.learner import bf16_rounding, block_plans, systolic_demo
from tpusim.report.memory_view import memory_view
from tpusim.report.timeline import segments, tracks
from tpusim.sim.device_timer import KernelTime
from tpusim.sim.estimate import timer_for

if TYPE_CHECKING:
    from tpusim.api import Compiled
    from tpusim.comparison import Comparison
    from tpusim.program.program import Kernel

# Longest text kept of one compiled stage (jaxpr, fused IR, program): a ResNet-50 training step's
# jaxpr alone runs to megabytes, and the report must stay a file one can mail.
MAX_STAGE_CHARS = 400_000


def report_data(compiled: "Compiled", inputs: list[Any] | None = None, comparison: "Comparison | None" = None) -> dict[str, Any]:
    """The report's data for a compiled model; `inputs` (flat arrays, one per program input)
    gives the learner views real activations; `comparison` adds the compare page."""
    est = compiled.estimate()
    chip = compiled.chip
    timer = timer_for(chip)
    n_units = timer.matrix_units
    kernels = [_kernel_row(i, kt, est.peak_flops, est.hbm_bandwidth) for i, kt in enumerate(est.ops)]
    capacity = int(chip.device_hbm_bytes) if chip.device_hbm_bytes else None
    memory = memory_view(compiled.program, capacity)
    track_names = tracks(n_units, est.matrix_unit, timer.vector_unit)
    segs = [[track_names.index(s.track), s.kernel, round(s.start_s * 1e6, 4), round(s.dur_s * 1e6, 4), s.depth,
             s.name if s.depth else ""] for s in segments(est, n_units, timer.vector_unit)]
    demo = systolic_demo(compiled.program, inputs, tuple(chip.mxu_shape) if chip.kind == "tpu" else (128, 128))
    rounding = None
    if demo is not None:
        a, w = demo.pop("operands")
        rounding = bf16_rounding(a, w)
    return {
        "meta": {"model": compiled.name, "device": est.device, "chip": chip.display_name, "kind": chip.kind,
                 "precision": compiled.precision, "matrix_unit": est.matrix_unit, "vector_unit": timer.vector_unit,
                 "compile_seconds": compiled.compile_seconds},
        "overview": _overview(compiled, est, capacity),
        "kernels": kernels,
        "timeline": {"tracks": track_names, "segments": segs, "step_us": est.time_s * 1e6},
        "roofline": {"peak_flops": est.peak_flops, "hbm_bandwidth": est.hbm_bandwidth},
        "memory": memory,
        "stages": _stages(compiled),
        "sources": _sources(compiled.program.kernels, est.ops),
        "collectives": _collectives(compiled, est),
        "learner": {"systolic": demo, "blocks": block_plans(compiled.program, est), "bf16": rounding,
                    "mxu_rows": int(chip.mxu_shape[0]) if chip.kind == "tpu" else None},
        "compare": _compare(comparison),
    }


def _kernel_row(i: int, kt: KernelTime, peak_flops: float, bw: float) -> dict[str, Any]:
    ideal = max(kt.flops / peak_flops if peak_flops else 0.0, kt.bytes / bw if bw else 0.0)
    return {"i": i, "name": kt.name, "kind": kt.kind, "start_us": kt.start_s * 1e6, "time_us": kt.time_s * 1e6,
            "ideal_us": ideal * 1e6, "wasted_us": max(0.0, kt.time_s - ideal) * 1e6, "flops": kt.flops,
            "bytes": kt.bytes, "bound": kt.bound, "mxu_us": kt.mxu_s * 1e6, "vpu_us": kt.vpu_s * 1e6,
            "dma_us": kt.dma_s * 1e6, "overhead_us": kt.overhead_s * 1e6, "comm_us": kt.comm_s * 1e6,
            "hidden_us": kt.hidden_s * 1e6, "where": kt.where, "source": _source_key(kt.where)}


def _overview(compiled: "Compiled", est: Any, capacity: int | None) -> dict[str, Any]:
    by_bound = est.time_by_bound()
    chips = compiled.distribution.devices if compiled.distribution is not None else 1
    price = price_of(compiled.chip.name)
    usd = price.usd * chips * est.time_s / 3600 if price else None
    top = sorted(by_bound.items(), key=lambda kv: -kv[1])
    share = top[0][1] / est.time_s if top and est.time_s else 0.0
    verdict = (f"{share:.0%} of the step is in {top[0][0]}-bound kernels" if top else "empty program")
    return {
        "step_us": est.time_s * 1e6, "tflops": est.tflops, "mxu_utilization": est.mxu_utilization,
        "hbm_utilization": est.hbm_utilization, "flops": est.flops, "hbm_bytes": est.hbm_bytes,
        "peak_hbm_bytes": est.peak_hbm_bytes, "capacity": capacity,
        "fits": capacity is None or est.peak_hbm_bytes <= capacity, "by_bound_us": {k: v * 1e6 for k, v in by_bound.items()},
        "verdict": verdict, "kernel_count": len(est.ops), "devices": chips,
        "communication_us": est.communication_s * 1e6, "exposed_communication_us": est.exposed_communication_s * 1e6,
        "energy_j": est.energy.joules if est.energy else None, "average_w": est.energy.average_w if est.energy else None,
        "usd_per_step": usd, "price": f"{price.cloud} {price.kind} {price.date}: US${price.usd}/chip-hour" if price else None,
    }


def _stages(compiled: "Compiled") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stage in ("jaxpr", "fused"):
        text = compiled.as_text(stage)
        out[stage] = text[:MAX_STAGE_CHARS]
        out[f"{stage}_truncated"] = len(text) > MAX_STAGE_CHARS
    blocks, used = [], 0
    for i, k in enumerate(compiled.program.kernels):
        text = k.describe()
        if used + len(text) > MAX_STAGE_CHARS:
            break
        used += len(text)
        blocks.append({"i": i, "text": text, "source": _source_key(k.where)})
    out["program"] = blocks
    out["program_truncated"] = len(blocks) < len(compiled.program.kernels)
    return out


_LOCATION = re.compile(r"([^\s()]+?\.py|<[^>]+>):(\d+)(?::\d+)?")


def _source_key(where: str) -> str:
    """What a kernel is attributed to: a Keras layer's name, or the user's file:line."""
    if not where:
        return "(no source)"
    if " (" in where and not _LOCATION.match(where):
        return where.split(" (")[0]  # "conv2d (keras/.../nn.py:762 (conv))": the layer
    m = _LOCATION.search(where)
    return f"{m.group(1)}:{m.group(2)}" if m else where


def _source_line(key: str) -> str:
    m = _LOCATION.fullmatch(key)
    if not m or "site-packages" in key:
        return ""
    path = Path(m.group(1))
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    n = int(m.group(2))
    return lines[n - 1].strip() if 0 < n <= len(lines) else ""


def _sources(kernels: list["Kernel"], times: list[KernelTime]) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for i, (k, kt) in enumerate(zip(kernels, times)):
        key = _source_key(k.where)
        g = groups.setdefault(key, {"key": key, "text": _source_line(key), "kernels": [], "time_us": 0.0})
        g["kernels"].append(i)
        g["time_us"] += kt.time_s * 1e6
    return sorted(groups.values(), key=lambda g: -g["time_us"])


def _collectives(compiled: "Compiled", est: Any) -> dict[str, Any] | None:
    if compiled.distribution is None:
        return None
    axes: dict[str, dict[str, float]] = {}

    def walk(kernels: list["Kernel"], kts: list[KernelTime], mult: float) -> None:
        for k, kt in zip(kernels, kts):
            if k.kind == "collective":
                name = " x ".join(k.op.params.get("axes", ())) or "(local)"
                a = axes.setdefault(name, {"count": 0, "bytes": 0.0, "time_us": 0.0, "hidden_us": 0.0})
                a["count"] += mult
                a["bytes"] += mult * kt.bytes
                a["time_us"] += mult * kt.comm_s * 1e6
                a["hidden_us"] += mult * kt.hidden_s * 1e6
            elif k.bodies and k.op.prim != "cond":  # a cond's times are its worst branch's
                body = list(k.bodies["body"].kernels) + (list(k.bodies["cond"].kernels) if "cond" in k.bodies else [])
                walk(body, kt.children, mult * int(k.op.params.get("trip_count") or 1))

    walk(compiled.program.kernels, est.ops, 1)
    for a in axes.values():
        a["exposed_us"] = max(0.0, a["time_us"] - a["hidden_us"])
    mesh = compiled.distribution.mesh
    return {"mesh": dict(mesh.shape), "system": compiled.distribution.system.name or "", "by_axis": axes,
            "communication_us": est.communication_s * 1e6, "exposed_us": est.exposed_communication_s * 1e6}


def _compare(comparison: "Comparison | None") -> dict[str, Any] | None:
    if comparison is None:
        return None
    frame = comparison.to_pandas().reset_index()
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict("records")]
    return {"unit": comparison.unit, "items_per_step": comparison.items_per_step, "rows": rows}
