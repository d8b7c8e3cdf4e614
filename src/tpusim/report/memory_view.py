"""The memory viewer's data: HBM in use over program order, by kind of buffer, and the buffers
live at the peak (XProf's memory viewer shows the same for a real TPU program)."""

from __future__ import annotations

from typing import Any

from tpusim.compiler.allocate import buffer_bucket, buffer_label
from tpusim.program.program import Program

# Kinds in the order they are stacked (bottom first); buffer_bucket names them.
BUCKETS = ("parameters", "optimizer state", "non-trainable state", "metric state", "inputs", "activations",
           "gradients and backward temporaries", "other intermediates")


def memory_view(program: Program, capacity: int | None, top: int = 40) -> dict[str, Any]:
    """Live bytes per kernel (total and by kind), the peak and the buffers live there."""
    n = max(1, len(program.kernels))
    by_kind = {b: [0] * n for b in BUCKETS}
    for a in program.allocations:
        row = by_kind.setdefault(buffer_bucket(a.value), [0] * n)
        for t in range(a.start, min(a.end, n - 1) + 1):
            row[t] += a.size
    total = [sum(row[t] for row in by_kind.values()) for t in range(n)]
    peak_t = total.index(max(total)) if total else 0
    live = sorted((a for a in program.allocations if a.start <= peak_t <= a.end), key=lambda a: -a.size)
    names = [k.name for k in program.kernels] or ["-"]

    def writer(a: Any) -> str:
        return "(program input)" if a.value.role in ("input", "param", "literal") else names[min(a.start, n - 1)]

    def reader(a: Any) -> str:
        return "(program output)" if a.end >= n - 1 and a.value.id in outputs else names[min(a.end, n - 1)]

    outputs = {v.id for v in program.outputs}
    return {
        "capacity": capacity, "heap_bytes": program.peak_hbm_bytes, "peak_live_bytes": program.peak_live_bytes,
        "peak_index": peak_t, "peak_kernel": names[peak_t],
        "kernels": names, "total": total,
        "by_kind": {k: v for k, v in by_kind.items() if any(v)},
        "peak_by_kind": {k: v[peak_t] for k, v in by_kind.items() if v[peak_t]},
        "peak_buffers": [{"label": buffer_label(a.value), "kind": buffer_bucket(a.value), "bytes": a.size,
                          "from": writer(a), "to": reader(a)} for a in live[:top]],
        "peak_buffers_total": len(live),
    }
