"""Runs inside the SCALE-Sim venv (numpy<2.4): simulate one topology, print cycles as JSON.

Usage: python scalesim_worker.py CONFIG TOPOLOGY LAYOUT OUTDIR gemm|conv
"""

import csv
import json
import sys
import time
from pathlib import Path

from scalesim.scale_sim import scalesim

config, topology, layout, outdir, kind = sys.argv[1:6]
t = time.perf_counter()
sim = scalesim(save_disk_space=True, verbose=False, config=config, topology=topology, layout=layout,
               input_type_gemm=(kind == "gemm"))
sim.run_scale(top_path=outdir)
wall = time.perf_counter() - t
reports = list(Path(outdir).rglob("COMPUTE_REPORT.csv"))
if not reports:  # SCALE-Sim exits 0 on errors: check its report exists
    sys.exit("SCALE-Sim wrote no COMPUTE_REPORT.csv")
rows = list(csv.reader(open(reports[0])))
cycles = [int(r[2]) for r in rows[1:] if len(r) > 2]
print(json.dumps({"cycles": cycles, "wall_s": wall}))
