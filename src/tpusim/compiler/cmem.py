"""Memory-space assignment for TPU v4's CMEM: which traffic runs on chip instead of over HBM.

TPU v4 has 128 MiB of common memory (CMEM) beside HBM, shared by its two TensorCores. XLA's
memory-space assignment uses it in three ways, all visible as `S(3)` in the optimized HLO of a
ResNet-50 training step on v4 (where ~40% of the fusions' operand and output bytes are in CMEM):
- a buffer that fits for its whole life lives there: its writes and reads skip HBM;
- a *prefetch* (copy-start / slice-start) copies a buffer from HBM into CMEM while earlier
  kernels compute, and the consumer reads CMEM;
- an *eviction*: a kernel writes its output to CMEM and a copy to HBM runs while later kernels
  compute.
The two copies move a memory-bound kernel's HBM stream into HBM time that compute-bound kernels
leave idle; they still cross HBM, so they count in HBM totals, not in any kernel's time.

The pass does the same in the simplest form that keeps the mechanism, and, like XLA's (which
orders buffers by how memory-bound their uses are), it asks the device model (`HbmPressure`):
traffic moved off HBM saves time only in a kernel whose HBM stream outlasts its compute, and a
copy can only use the HBM time other kernels leave idle. Candidates (whole-life placements of
intermediates; a prefetch or eviction for each HBM operand of a memory-bound kernel, over the
kernels nearest it, back to its producer) are taken in order of seconds saved per byte of CMEM
held per kernel, and kept when CMEM has room over their window and the window's idle HBM time
carries the copy (partly, as XLA's sliced prefetch does). No constant of its own. Placement
changes timing only; HBM peak stays as allocated (XLA also keeps room to spill).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tpusim.compiler.layout import padded_bytes
from tpusim.program.program import HbmPressure, Kernel, Program

PressureOf = Callable[[Kernel], HbmPressure]


@dataclass
class _Schedule:
    """Who makes and last reads each buffer, its size, and the CMEM held at each kernel."""

    program: Program
    capacity: int
    in_use: list[int]
    producer: dict[int, int]
    last_use: dict[int, int]
    sizes: dict[int, int]  # padded bytes of the buffers that may go on chip

    @classmethod
    def of(cls, program: Program, capacity: int) -> "_Schedule":
        values, producer, last_use = {}, {}, {}
        for i, k in enumerate(program.kernels):
            for v in k.outputs:
                values.setdefault(v.id, v)
                producer.setdefault(v.id, i)
            for v in k.inputs:
                values.setdefault(v.id, v)
                last_use[v.id] = i
        sizes = {vid: padded_bytes(v.shape, v.dtype) for vid, v in values.items()
                 if vid not in program.on_chip and v.memory != "host"}
        sizes = {vid: size for vid, size in sizes.items() if 0 < size <= capacity}
        return cls(program, capacity, [0] * len(program.kernels), producer, last_use, sizes)

    def fits(self, lo: int, hi: int, size: int) -> bool:
        return max(self.in_use[lo:hi + 1]) + size <= self.capacity

    def hold(self, lo: int, hi: int, size: int) -> None:
        for t in range(lo, hi + 1):
            self.in_use[t] += size

    def move(self, moved: dict[tuple[int, int], float]) -> int:
        """Take each (kernel, value)'s share of traffic off HBM onto CMEM; returns the bytes."""
        total = 0
        for i, k in enumerate(self.program.kernels):
            outs = {v.id for v in k.outputs}
            for vid, b in k.traffic.items():
                take = min(int(b * moved.get((i, vid), 0.0)), k.hbm_bytes)
                if take:
                    k.hbm_bytes -= take
                    if vid in outs:
                        k.cmem_write_bytes += take
                    else:
                        k.cmem_read_bytes += take
                    total += take
            k.counts.bytes = float(k.hbm_bytes)
        return total


def _saved(p: HbmPressure, nbytes: float) -> float:
    """Seconds a kernel saves when `nbytes` of its HBM stream move on chip."""
    return min(p.excess_s, nbytes * p.per_byte_s)


def _place_whole_lives(s: _Schedule, pressure: PressureOf) -> int:
    """Intermediates that fit for their whole life, in order of time saved per byte-kernel."""
    program = s.program
    stats = [pressure(k) for k in program.kernels]
    gain: dict[int, float] = {}
    for i, k in enumerate(program.kernels):
        for vid, b in k.traffic.items():
            gain[vid] = gain.get(vid, 0.0) + _saved(stats[i], b)
    io = {v.id for v in [*program.inputs, *program.outputs, *program.params]}
    candidates = []
    for vid, start in s.producer.items():
        end = s.last_use.get(vid, start)
        if vid not in io and vid in s.sizes and end > start and gain.get(vid, 0.0) > 0:
            candidates.append((-gain[vid] / (s.sizes[vid] * (end - start + 1)), vid))
    moved = {}
    for _, vid in sorted(candidates):
        start, end, size = s.producer[vid], s.last_use[vid], s.sizes[vid]
        if s.fits(start, end, size):
            s.hold(start, end, size)
            moved.update({(i, vid): 1.0 for i in range(start, end + 1) if vid in program.kernels[i].traffic})
    return s.move(moved)


def _copy_async(s: _Schedule, pressure: PressureOf) -> int:
    """Prefetches and evictions for the HBM operands of memory-bound kernels, over the nearest
    kernels' idle HBM time, in order of time saved per byte-kernel of CMEM."""
    kernels, n = s.program.kernels, len(s.program.kernels)
    stats = [pressure(k) for k in kernels]  # asked again: placement changed what is memory-bound
    idle, excess = [p.idle_bytes for p in stats], [p.excess_s for p in stats]

    def window(j: int, vid: int, evict: bool) -> tuple[list[int], float]:
        """Kernels next to `j` (after it for an eviction, before it back to the producer for a
        prefetch) whose idle HBM time carries the copy while CMEM holds the buffer."""
        size = s.sizes[vid]
        if not s.fits(j, j, size):
            return [], 0.0
        span = range(j + 1, n) if evict else range(j - 1, s.producer.get(vid, -1), -1)
        taken, got = [], 0.0
        for i in span:
            if s.in_use[i] + size > s.capacity:
                break
            if idle[i] > 0:
                taken.append(i)
                got += idle[i]
            if got >= size:
                break
        return taken, min(got, float(size))

    readers: dict[int, list[int]] = {}
    for i, k in enumerate(kernels):
        for v in k.inputs:
            if v.id in k.traffic and i not in readers.setdefault(v.id, [])[-1:]:
                readers[v.id].append(i)
    candidates = []
    for j, k in enumerate(kernels):
        outs = {v.id for v in k.outputs}
        for vid, b in k.traffic.items() if excess[j] > 0 else ():
            if vid in s.sizes:
                taken, _ = window(j, vid, vid in outs)
                if taken:
                    candidates.append((-_saved(stats[j], b) / (s.sizes[vid] * (abs(taken[-1] - j) + 1)), j, vid))
    moved = {}
    for _, j, vid in sorted(candidates):
        if excess[j] <= 0 or (j, vid) in moved:
            continue
        taken, got = window(j, vid, vid in {v.id for v in kernels[j].outputs})
        if not taken:
            continue
        left = got
        for i in taken:
            use = min(left, idle[i])
            idle[i] -= use
            kernels[i].async_copy_bytes += int(use)
            left -= use
        share, size = got / s.sizes[vid], s.sizes[vid]
        hi = max(j, taken[-1])
        s.hold(min(j, taken[-1]), hi, size)
        for c in [j, *(r for r in readers.get(vid, ()) if r > j)]:  # later readers use the copy
            if c > hi:  # keeping it on chip until then is worth it only to a memory-bound reader
                if excess[c] <= 0 or not s.fits(hi + 1, c, size):
                    break
                s.hold(hi + 1, c, size)
                hi = c
            moved[(c, vid)] = max(moved.get((c, vid), 0.0), share)
            excess[c] -= _saved(stats[c], kernels[c].traffic[vid] * share)
    return s.move(moved)


def assign_cmem(program: Program, capacity: int, pressure: PressureOf) -> int:
    """Assign CMEM in `program` (and in its loop bodies, in the CMEM the loop leaves free):
    whole-life placements first, then async copies in what is left; moves the traffic from each
    kernel's `hbm_bytes` to its CMEM counters and charges the copies to the kernels they run
    behind. Returns the bytes of traffic moved."""
    if capacity <= 0 or not program.kernels:
        return 0
    s = _Schedule.of(program, capacity)
    total = _place_whole_lives(s, pressure) + _copy_async(s, pressure)
    for i, k in enumerate(program.kernels):
        for body in k.bodies.values():
            inner = assign_cmem(body, capacity - s.in_use[i], pressure)
            k.hbm_bytes -= min(k.hbm_bytes, inner * int(k.grid[0] if k.grid else 1))
            k.counts.bytes = float(k.hbm_bytes)
    return total
