"""Memory-space assignment for TPU v4's CMEM: which short-lived buffers live on chip.

TPU v4 has 128 MiB of common memory (CMEM) beside HBM, shared by its two TensorCores. XLA's
memory-space assignment places buffers there when they fit for their whole life (in a ResNet-50
training step on v4 about a quarter of the fusions' traffic goes to CMEM, S(3) in the optimized
HLO), so their reads and writes skip HBM and run at CMEM's higher bandwidth.

The pass here does the same in the simplest form that keeps the mechanism: over the kernel
schedule, intermediate buffers (not program inputs or outputs) are taken in order of traffic
saved per byte of CMEM held per kernel of their life, and placed when the CMEM in use over that
life leaves room. Placement changes timing only; HBM peak stays as allocated (XLA also keeps
room to spill). XLA's prefetch of slices of large buffers and its cross-program prefetch of a
parameter are left out (both only hide latency that tpusim does not charge).
"""

from __future__ import annotations

from tpusim.compiler.layout import padded_bytes
from tpusim.ir.graph import Value
from tpusim.program.program import Program


def assign_cmem(program: Program, capacity: int) -> int:
    """Place buffers of `program` (and of its loop bodies, in the CMEM the loop leaves free) in
    `capacity` bytes of CMEM; move their traffic from each kernel's `hbm_bytes` to its CMEM
    counters. Returns the bytes of traffic moved."""
    if capacity <= 0 or not program.kernels:
        return 0
    n = len(program.kernels)
    io = {v.id for v in [*program.inputs, *program.outputs, *program.params]}
    produced: dict[int, tuple[Value, int]] = {}
    last_use: dict[int, int] = {}
    moved: dict[int, int] = {}
    for i, k in enumerate(program.kernels):
        for v in k.outputs:
            produced.setdefault(v.id, (v, i))
        for v in k.inputs:
            last_use[v.id] = i
        for vid, b in k.traffic.items():
            moved[vid] = moved.get(vid, 0) + b

    candidates = []
    for vid, (v, start) in produced.items():
        if vid in io or vid in program.on_chip or v.memory == "host" or vid not in last_use:
            continue
        size = padded_bytes(v.shape, v.dtype)
        end = last_use[vid]
        if 0 < size <= capacity and end > start and moved.get(vid, 0):
            candidates.append((moved[vid] / (size * (end - start + 1)), start, end, size, vid))
    candidates.sort(key=lambda c: -c[0])

    in_use = [0] * n
    placed: set[int] = set()
    for _, start, end, size, vid in candidates:
        if max(in_use[start:end + 1]) + size <= capacity:
            placed.add(vid)
            for t in range(start, end + 1):
                in_use[t] += size

    total = 0
    for i, k in enumerate(program.kernels):
        outs = {v.id for v in k.outputs}
        for vid, b in k.traffic.items():
            if vid in placed:
                take = min(b, k.hbm_bytes)
                k.hbm_bytes -= take
                if vid in outs:
                    k.cmem_write_bytes += take
                else:
                    k.cmem_read_bytes += take
                total += take
        k.counts.bytes = float(k.hbm_bytes)
        for body in k.bodies.values():
            inner = assign_cmem(body, capacity - in_use[i])
            k.hbm_bytes -= min(k.hbm_bytes, inner * int(k.grid[0] if k.grid else 1))
            k.counts.bytes = float(k.hbm_bytes)
    return total
