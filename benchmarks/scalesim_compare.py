"""tpusim vs SCALE-Sim on the same 128x128 weight-stationary array: cycles and wall time.

Run: python benchmarks/scalesim_compare.py [--gemm 1024,2048] [--skip-resnet] [--gemm-table]

SCALE-Sim 3 (pip `scalesim`) needs numpy<2.4, so it gets its own venv here
(benchmarks/.venv-scalesim, made on first use). Inputs come from ../shared/scalesim
(ws128_calc.cfg, Resnet50.csv: conv layers without padding, as SCALE-Sim maps them: M = output
pixels, K = filter window x channels, N = filters). tpusim's block formula is evaluated for the
same mapping, without weight double-buffering (SCALE-Sim's model) and with it (the TPU's).
--gemm-table regenerates tests/data/scalesim_ws_gemm.csv (small arrays and GEMMs).
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).parent
SHARED = HERE.parent.parent / "shared" / "scalesim"
VENV = HERE / ".venv-scalesim"
sys.path.insert(0, str(HERE.parent / "src"))

from tpusim.sim.mxu_timing import ws_cycles  # noqa: E402


def scalesim_python() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "scalesim", "numpy<2.4"], check=True)
    return py


def run_scalesim(rows: int, cols: int, topology_text: str, kind: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = (SHARED / "ws128_calc.cfg").read_text()
        cfg = re.sub(r"ArrayHeight:\s*\d+", f"ArrayHeight:    {rows}", cfg)
        cfg = re.sub(r"ArrayWidth:\s*\d+", f"ArrayWidth:     {cols}", cfg)
        (Path(tmp) / "a.cfg").write_text(cfg)
        (Path(tmp) / "t.csv").write_text(topology_text)
        out = subprocess.run([str(scalesim_python()), str(HERE / "scalesim_worker.py"), f"{tmp}/a.cfg", f"{tmp}/t.csv",
                              str(SHARED / "layout_dummy.csv"), f"{tmp}/out", kind], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def resnet_layers() -> list[tuple[str, int, int, int]]:
    layers = []
    with open(SHARED / "Resnet50.csv") as f:
        for row in csv.reader(f):
            if not row or not row[0].strip() or row[0].startswith("Layer"):
                continue
            name, h, w, r, s, c, n, stride = [x.strip() for x in row[:8]]
            h, w, r, s, c, n, stride = map(int, (h, w, r, s, c, n, stride))
            # SCALE-Sim's output size is ceil((H - R + S) / S): one more row/column than the usual
            # floor((H - R) / S) + 1 when the stride does not divide H - R. Use its convention here.
            m = -(-(h - r + stride) // stride) * -(-(w - s + stride) // stride)
            layers.append((name, m, r * s * c, n))
    return layers


def main() -> None:
    args = sys.argv[1:]
    gemms = [1024]
    if "--gemm" in args:
        gemms = [int(x) for x in args[args.index("--gemm") + 1].split(",")]
    table = Table(title="tpusim vs SCALE-Sim, 128x128 weight-stationary array")
    for col in ("workload", "SCALE-Sim cycles", "tpusim cycles (no weight double-buffer)", "match",
                "tpusim cycles (double-buffered)", "SCALE-Sim wall", "tpusim wall"):
        table.add_column(col, justify="left" if col == "workload" else "right")
    for n in gemms:
        ss = run_scalesim(128, 128, f"Layer Name, M, N, K,\nG, {n}, {n}, {n},\n", "gemm")
        t = time.perf_counter()
        ours = ws_cycles(n, n, n, 128, 128, double_buffered=False)
        ours_db = ws_cycles(n, n, n, 128, 128)
        wall = time.perf_counter() - t
        table.add_row(f"GEMM {n}^3", f"{ss['cycles'][0]:,}", f"{ours - 1:,} (+1)", str(ss["cycles"][0] == ours - 1),
                      f"{ours_db:,}", f"{ss['wall_s']:.1f} s", f"{wall * 1e6:.0f} us")
    if "--skip-resnet" not in args:
        topo = (SHARED / "Resnet50.csv").read_text()
        ss = run_scalesim(128, 128, topo, "conv")
        layers = resnet_layers()
        t = time.perf_counter()
        ours = [ws_cycles(m, k, n, 128, 128, double_buffered=False) for _, m, k, n in layers]
        ours_db = [ws_cycles(m, k, n, 128, 128) for _, m, k, n in layers]
        wall = time.perf_counter() - t
        matches = sum(a == b - 1 for a, b in zip(ss["cycles"], ours))
        table.add_row(f"ResNet-50 conv layers ({len(layers)})", f"{sum(ss['cycles']):,}", f"{sum(ours) - len(ours):,} (+1 each)",
                      f"{matches}/{len(layers)} layers", f"{sum(ours_db):,}", f"{ss['wall_s']:.1f} s", f"{wall * 1e3:.2f} ms")
    Console(width=200).print(table)
    if "--gemm-table" in args:
        write_gemm_table()


def write_gemm_table() -> None:
    cases = [(8, 8, 16, 8, 8), (8, 8, 5, 20, 30), (16, 8, 40, 20, 30), (8, 16, 3, 40, 50), (4, 4, 1, 1, 1),
             (32, 32, 100, 70, 129), (16, 16, 7, 1000, 127), (128, 128, 256, 128, 256), (128, 128, 1, 129, 1000),
             (64, 32, 129, 7, 200), (128, 128, 512, 256, 384), (256, 256, 300, 300, 300)]
    path = HERE.parent / "tests" / "data" / "scalesim_ws_gemm.csv"
    lines = [path.read_text().splitlines()[0], "rows,cols,M,N,K,scalesim_compute_cycles"]
    for r, c, m, n, k in cases:
        ss = run_scalesim(r, c, f"Layer Name, M, N, K,\nL0, {m}, {n}, {k},\n", "gemm")
        lines.append(f"{r},{c},{m},{n},{k},{ss['cycles'][0]}")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
