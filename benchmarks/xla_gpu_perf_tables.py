"""Regenerate src/tpusim/validation/data/gpu_xla_gemm.csv from XLA's measured GPU matmul tables.

XLA:GPU ships the output of its `matmul_perf_table_gen` tool (xla/tools): every HLO dot of a
b x m x n x k sweep (b in {1, 2, 4}; m, n, k in 256..4096, powers of two) compiled by XLA and
timed on the GPU (median CUPTI kernel time of 5 runs), stored as FLOP/s per dtype in
xla/service/gpu/model/matmul_interpolator_data.h. This script copies those values, as printed,
for the devices and dtypes tpusim validates against. It needs a git clone of openxla/xla (or
ROCm/xla, which also holds the gfx942 table) with history:

    python benchmarks/xla_gpu_perf_tables.py /path/to/xla > src/tpusim/validation/data/gpu_xla_gemm.csv

Kept out: H100 fp8 (its values exceed the H100's published dense fp8 peak by up to 32%, so the
timed kernel is not the dense GEMM the row names), MI300X f32 (above the FP32 peak: a reduced-
precision path) and the mixed fp8 pairs (the same kernels as e4m3 x e4m3).
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys

PATH = "xla/service/gpu/model/matmul_interpolator_data.h"
# (commit, XLA device key, tpusim chip, dtypes kept). The commits are ROCm/xla's; the sm_90 and
# sm_100 tables are upstream openxla/xla's, merged there.
PICKS = [
    ("ea2c45f2ca", "sm_90", "h100", ("bf16xbf16->bf16", "f32xf32->f32")),
    ("71feeddf7c", "sm_100", "b200", ("bf16xbf16->bf16", "f32xf32->f32", "f8e4m3fnxf8e4m3fn->bf16")),
    ("ea2c45f2ca", "gfx942", "mi300x", ("bf16xbf16->bf16",)),
]
DTYPE = {"bf16xbf16->bf16": "bfloat16", "f32xf32->f32": "float32", "f8e4m3fnxf8e4m3fn->bf16": "float8_e4m3fn"}


def main(repo: str) -> None:
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["chip", "xla_device", "b", "m", "n", "k", "xla_dtypes", "dtype", "published_flops_per_s",
                  "source_commit", "source_path"])
    for commit, key, chip, keep in PICKS:
        full = subprocess.check_output(["git", "-C", repo, "rev-parse", commit], text=True).strip()
        text = subprocess.check_output(["git", "-C", repo, "show", f"{commit}:{PATH}"], text=True)
        block = next(b for b in re.split(r'\n  entries \{\n    key: "', text) if b.startswith(key + '"'))
        for entry in re.finditer(r"entries \{\s*b: (\d+)\s*m: (\d+)\s*n: (\d+)\s*k: (\d+)(.*?)\n      \}", block, re.S):
            b, m, n, k, body = entry.groups()
            for dtypes, value in re.findall(r'flops \{\s*key: "([^"]+)"\s*value: (\d+)\s*\}', body):
                if dtypes in keep:
                    out.writerow([chip, key, b, m, n, k, dtypes, DTYPE[dtypes], value, full, PATH])


if __name__ == "__main__":
    main(sys.argv[1])
