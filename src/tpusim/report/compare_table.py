"""A comparison as a terminal table and as a plot (time, cost and energy per device)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from tpusim.comparison import Comparison


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


# Columns a narrow terminal (below 120 characters) still shows.
_NARROW = ("device", "step", "/s", "fits", "$/M", "kWh/M")


def comparison_table(comp: "Comparison", title: str = "", width: int | None = None) -> Table:
    """All columns, or on a narrow terminal (`width` < 120) the six that answer the question."""
    t = Table(title=title or f"one step, {comp.items_per_step:,} {comp.unit} (estimates)")
    columns = ("device", "chips", "step", f"{comp.unit}/s", "MFU", "peak HBM", "fits", "$/hour",
               f"$/M {comp.unit}", "energy/step", f"kWh/M {comp.unit}", "W/chip")
    keep = [i for i, c in enumerate(columns) if width is None or width >= 120 or any(c.startswith(n) or c.endswith(n)
                                                                                    for n in _NARROW)]
    for i in keep:
        t.add_column(columns[i], justify="left" if i == 0 else "right", no_wrap=True)
    for r in comp.rows:
        fits = "yes" if r.fits else f"no: {r.fits_on}"
        step = f"{r.step_s:.3g} s" if r.step_s >= 1 else f"{r.step_s * 1e3:.3g} ms"
        cells = (r.device, f"{r.chips:g}", step, f"{r.throughput:,.0f}", f"{r.mfu:.0%}",
                 f"{r.peak_hbm_gib:.2f}/{r.hbm_gib:.0f} GiB", fits, _num(r.usd_per_hour, ",.2f"),
                 _num(r.usd_per_million, ",.3g"), "-" if r.energy_j is None else f"{r.energy_j:.3g} J",
                 _num(r.kwh_per_million, ".3g"), _num(r.average_w_per_chip, ".0f"))
        t.add_row(*(cells[i] for i in keep))
    return t


def plot_comparison(comp: "Comparison", path: str) -> str:
    """Three bar charts side by side: step time, $ and kWh per million items."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.device for r in comp.rows]
    panels: list[tuple[str, list[Any]]] = [
        ("step time (ms)", [r.step_s * 1e3 for r in comp.rows]),
        (f"$ per million {comp.unit}", [r.usd_per_million or 0.0 for r in comp.rows]),
        (f"kWh per million {comp.unit}", [r.kwh_per_million or 0.0 for r in comp.rows])]
    fig, axes = plt.subplots(1, 3, figsize=(4 * len(panels), 0.5 * len(names) + 2))
    for ax, (label, values) in zip(axes, panels):
        colors = ["tab:blue" if r.fits else "tab:red" for r in comp.rows]
        ax.barh(names, values, color=colors)
        ax.set_xlabel(label)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 4))
        ax.invert_yaxis()
    axes[0].set_title("red: does not fit on that device", fontsize=9)
    fig.suptitle(f"one step, {comp.items_per_step:,} {comp.unit} (tpusim estimates)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
