"""Rich tables for a timing estimate: per-op rows and a summary."""

from __future__ import annotations

from rich.table import Table

from tpusim.report.tables import si
from tpusim.sim.estimate import Estimate


# Columns of the per-kernel table, and the narrowest terminal each is shown on: below 100
# columns only what says where the time goes stays (kernel names wrap, never cut).
_OPS_COLUMNS = (("#", 0), ("kernel", 0), ("kind", 100), ("time", 0), ("% time", 0), ("FLOPs", 120),
                ("HBM bytes", 120), ("TFLOP/s", 140), ("MXU", 140), ("VPU", 140), ("DMA", 140), ("bound", 0))


def columns_for(spec: tuple[tuple[str, int], ...], width: int | None) -> list[str]:
    """The columns of `spec` (name, narrowest terminal it is shown on) that a terminal `width`
    columns wide shows (all of them when the width is unknown)."""
    return [name for name, narrowest in spec if width is None or width >= narrowest]


def ops_table(est: Estimate, limit: int | None = 25, sort_by_time: bool = False, width: int | None = None) -> Table:
    """The kernels with their time and why; `width` (the terminal's columns) drops the detail
    columns that would not fit."""
    shown_cols = columns_for(_OPS_COLUMNS, width)
    t = Table(title=f"per-kernel estimate on {est.device}")
    for col in shown_cols:
        t.add_column(col, justify="left" if col in ("kernel", "kind", "bound") else "right",
                     overflow="fold" if col == "kernel" else "ellipsis", no_wrap=col != "kernel")
    rows = list(enumerate(est.ops))
    if sort_by_time:
        rows.sort(key=lambda r: -r[1].time_s)
    shown = rows if limit is None else rows[:limit]
    for i, op in shown:
        cells = {"#": str(i), "kernel": op.name, "kind": op.kind, "time": _us(op.time_s),
                 "% time": f"{op.time_s / est.time_s:.1%}" if est.time_s else "-", "FLOPs": si(op.flops),
                 "HBM bytes": si(op.bytes, "B"), "TFLOP/s": f"{op.flops / op.time_s / 1e12:.1f}" if op.time_s else "-",
                 "MXU": _us(op.mxu_s), "VPU": _us(op.vpu_s), "DMA": _us(op.dma_s), "bound": op.bound}
        t.add_row(*[cells[c] for c in shown_cols])
    if limit is not None and len(rows) > limit:
        t.add_row("...", f"{len(rows) - limit} more kernels", *[""] * (len(shown_cols) - 2))
    return t


def _us(s: float) -> str:
    if s == 0:
        return "-"
    return f"{s * 1e3:.2f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} us"


def estimate_summary(est: Estimate, title: str = "") -> Table:
    t = Table(title=title or f"estimate on {est.device}", show_header=False)
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("step time", _us(est.time_s))
    t.add_row("achieved", f"{est.tflops:.2f} TFLOP/s of {est.peak_flops / 1e12:.0f} peak")
    t.add_row(f"{est.matrix_unit} utilization", f"{est.mxu_utilization:.1%}")
    t.add_row("FLOPs", si(est.flops, "FLOP"))
    t.add_row("HBM traffic", f"{si(est.hbm_bytes, 'B')} ({est.hbm_utilization:.0%} of bandwidth over the step)")
    t.add_row("peak HBM", si(est.peak_hbm_bytes, "B"))
    if est.energy is not None:
        e = est.energy
        amount = f"{e.joules * 1e3:.3g} mJ" if e.joules < 1 else f"{e.joules:.3g} J"
        t.add_row("energy (estimate)", f"{amount}, {e.average_w:.0f} W average (idle {e.idle_w:.0f}, max {e.max_w:.0f} W)")
    for bound, secs in sorted(est.time_by_bound().items(), key=lambda kv: -kv[1]):
        t.add_row(f"time in {bound}-bound kernels", f"{_us(secs)} ({secs / est.time_s:.0%})")
    top = est.top_ops(3)
    t.add_row("top kernels", ", ".join(f"{o.name} {o.time_s / est.time_s:.0%}" for o in top))
    return t
