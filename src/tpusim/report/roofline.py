"""Roofline plot: every kernel at its arithmetic intensity and achieved FLOP/s, under the
chip's compute peak and HBM-bandwidth slope."""

from __future__ import annotations

from pathlib import Path

from tpusim.sim.estimate import Estimate

COLORS = {"compute": "tab:blue", "memory": "tab:orange", "vector": "tab:green", "overhead": "tab:gray"}


def plot_roofline(est: Estimate, path: str | Path, title: str = "", label_top: int = 5) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ridge = est.peak_flops / est.hbm_bandwidth
    xs = [op.flops / op.bytes for op in est.ops if op.bytes and op.flops]
    lo = min([ridge / 100] + xs) / 2
    hi = max([ridge * 100] + xs) * 2
    ax.plot([lo, ridge, hi], [lo * est.hbm_bandwidth, est.peak_flops, est.peak_flops], "k-", lw=1.5,
            label=f"roofline: {est.peak_flops / 1e12:.0f} TFLOP/s, {est.hbm_bandwidth / 1e9:.0f} GB/s")
    top = {id(o) for o in est.top_ops(label_top)}
    for bound, color in COLORS.items():
        pts = [(op.flops / op.bytes, op.flops / op.time_s, op) for op in est.ops
               if op.bound == bound and op.bytes and op.flops and op.time_s]
        if not pts:
            continue
        sizes = [20 + 400 * op.time_s / est.time_s for _, _, op in pts]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=sizes, c=color, alpha=0.6, label=f"{bound}-bound kernels")
        for x, y, op in pts:
            if id(op) in top:
                ax.annotate(op.name, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / HBM byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_title(title or f"roofline on {est.device}: {est.time_s * 1e3:.3f} ms, {est.matrix_unit} {est.mxu_utilization:.0%}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
