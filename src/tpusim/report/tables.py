"""Rich tables shared by the CLI and the demo."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from tpusim.api import Compiled
from tpusim.hardware.chip import Chip

if TYPE_CHECKING:
    import pandas as pd


def si(x: float, unit: str = "") -> str:
    """1234567 -> '1.23 M' (decimal prefixes, as FLOP and byte counts are usually quoted)."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}".rstrip()


def _v(field: object, fmt: str = "{:g}") -> str:
    return fmt.format(field.value) if field is not None else "-"  # type: ignore[attr-defined]


def devices_table(chips: list[Chip]) -> Table:
    t = Table(title="tpusim device catalog", caption=", ".join(f"{c.name}: {c.display_name}" for c in chips))
    for col in ("name", "kind", "cores x MXUs", "MXU", "peak TFLOP/s", "HBM GiB", "HBM GB/s", "VMEM MiB", "$/chip-h"):
        t.add_column(col, justify="left" if col in ("name", "kind") else "right")
    for c in chips:
        cores = f"{_v(c.tensorcores_per_chip)} x {_v(c.mxus_per_core)}" if c.kind == "tpu" else (f"{_v(c.sm_count)} SMs" if c.sm_count else "-")
        mxu = f"{c.mxu_shape[0]}x{c.mxu_shape[1]} {c.mxu_dtype}" if c.kind == "tpu" else "-"
        peak = f"{c.peak_matmul_tflops:g}" + (" int8" if c.mxu_dtype == "int8" else "")
        t.add_row(c.name, c.kind, cores, mxu, peak, _v(c.hbm_gib), _v(c.hbm_bandwidth_gbps),
                  _v(c.vmem_mib_per_core), _v(c.price_usd_per_chip_hour, "{:.2f}"))
    return t


def devices_frame(chips: list[Chip]) -> "pd.DataFrame":
    """The catalog as data: one row per chip, the numbers unformatted (None where a file is silent)."""
    import pandas as pd

    val = lambda s: None if s is None else s.value  # noqa: E731
    return pd.DataFrame([{
        "name": c.name, "display_name": c.display_name, "kind": c.kind,
        "tensorcores": val(c.tensorcores_per_chip), "mxus_per_core": val(c.mxus_per_core),
        "mxu_rows": val(c.mxu_rows), "mxu_cols": val(c.mxu_cols), "sm_count": val(c.sm_count), "mxu_dtype": c.mxu_dtype,
        "peak_matmul_tflops": c.peak_matmul_tflops, "hbm_gib": val(c.hbm_gib), "hbm_gbps": val(c.hbm_bandwidth_gbps),
        "vmem_mib_per_core": val(c.vmem_mib_per_core), "price_usd_per_chip_hour": val(c.price_usd_per_chip_hour),
    } for c in chips])


def kernels_table(compiled: Compiled, limit: int | None = None) -> Table:
    t = Table(title=f"kernels compiled for {compiled.chip.display_name}")
    for col in ("#", "kernel", "kind", "grid", "fused ops", "FLOPs", "HBM bytes", "MXU fill"):
        t.add_column(col, justify="right" if col in ("#", "FLOPs", "HBM bytes", "MXU fill") else "left")
    kernels = compiled.kernels if limit is None else compiled.kernels[:limit]
    for i, k in enumerate(kernels):
        grid = "x".join(str(g) for g in k.grid)
        fused = ", ".join(dict.fromkeys(op.prim for op in k.fused.ops)) if k.fused is not None else k.op.prim
        fill = ""
        if k.mxu is not None:  # a depthwise conv runs on the VPU: no MXU fill to speak of
            fill = f"{k.mxu.useful_flops / k.mxu.issued_flops:.0%}" if k.mxu.engine == "mxu" else "on VPU"
        t.add_row(str(i), k.name, k.kind, grid, fused[:48], si(k.counts.flops), si(k.hbm_bytes, "B"), fill)
    if limit is not None and len(compiled.kernels) > limit:
        t.add_row("...", f"{len(compiled.kernels) - limit} more", "", "", "", "", "", "")
    return t


def summary_table(compiled: Compiled) -> Table:
    c = compiled.counts()
    mxu = [k.mxu for k in compiled.program.all_kernels() if k.mxu is not None and k.mxu.engine == "mxu"]
    useful = sum(p.useful_flops for p in mxu)
    issued = sum(p.issued_flops for p in mxu)
    t = Table(title=f"{compiled.name} on {compiled.chip.display_name} (precision {compiled.precision})", show_header=False)
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("kernels", str(len(compiled.kernels)))
    t.add_row("FLOPs (MXU taps incl. padding)", si(c.flops, "FLOP"))
    t.add_row("FLOPs (XLA convention)", si(c.flops_xla, "FLOP"))
    t.add_row("transcendentals", si(c.transcendentals))
    t.add_row("HBM traffic, unfused (logical bytes)", si(c.bytes, "B"))
    t.add_row("HBM traffic, compiled (tiled layout, re-reads)", si(compiled.hbm_bytes, "B"))
    t.add_row("MXU fill (useful / issued incl. padding)", f"{useful / issued:.1%}" if issued else "-")
    t.add_row("peak HBM (heap)", si(compiled.peak_hbm_bytes, "B"))
    remat = compiled.program.remat
    if remat is not None and remat.values:
        t.add_row("rematerialized to fit (as XLA does)",
                  f"{len(remat.values)} buffers, {si(remat.bytes, 'B')}; peak {si(remat.peak_before, 'B')} -> "
                  f"{si(remat.peak_after, 'B')}")
    t.add_row("peak HBM (live sum)", si(compiled.program.peak_live_bytes, "B"))
    t.add_row("device HBM", si(compiled.chip.device_hbm_bytes, "B"))
    t.add_row("compile time", f"{compiled.compile_seconds * 1e3:.0f} ms")
    return t
