"""Block-level timing of a weight-stationary systolic array (the MXU).

An R x C array holds one weight tile (R values of K by C values of N): a *fold*. A matmul of
M x K by K x N needs F = ceil(K/R) * ceil(N/C) folds. For each fold:
- the weights shift in, one row per cycle: R cycles on the weight bus;
- the M activation rows stream in from the left, skewed one cycle per array row; the last
  result leaves the bottom of the last column M + R + C - 2 cycles after streaming starts
  (M rows, plus R - 1 rows of skew, plus C - 1 columns of travel, plus one cycle out).
Without double-buffered weights a fold therefore costs R + (M + R + C - 2) = 2R + C + M - 2
cycles, the count SCALE-Sim reports for its weight-stationary dataflow (minus one: SCALE-Sim
reports the index of the last cycle, counting from zero).

With two weight banks, the next fold's weights load while the current fold streams. The rules:
a fold may start loading when the bus is free and one of the banks is free (its previous fold
has fully drained); it may start streaming when its weights are loaded and the previous fold
has finished entering the array (M cycles after it started). The schedule becomes periodic
with a period of two folds after a few folds, so a handful of folds are stepped exactly and
the rest extrapolated: exact, and O(1) in F.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def folds(K: int, N: int, rows: int, cols: int) -> int:
    return math.ceil(max(K, 1) / rows) * math.ceil(max(N, 1) / cols)


def drain_cycles(M: int, rows: int, cols: int) -> int:
    """Cycles from the first activation entering to the last result leaving."""
    return M + rows + cols - 2


@dataclass(frozen=True)
class FoldTimes:
    load_start: int
    stream_start: int
    end: int


def fold_schedule(F: int, M: int, rows: int, cols: int, double_buffered: bool = True) -> list[FoldTimes]:
    """Step the schedule fold by fold (used for the first folds, and by tests)."""
    out: list[FoldTimes] = []
    bus_free = 0
    for f in range(F):
        bank_user = f - 2 if double_buffered else f - 1  # the fold that last used this bank
        bank_free = out[bank_user].end if bank_user >= 0 else 0
        load_start = max(bus_free, bank_free)
        loaded = load_start + rows
        bus_free = loaded
        stream = loaded if f == 0 else max(loaded, out[f - 1].stream_start + M)
        out.append(FoldTimes(load_start, stream, stream + drain_cycles(M, rows, cols)))
    return out


def ws_cycles(M: int, K: int, N: int, rows: int, cols: int, double_buffered: bool = True) -> int:
    """Cycles for an (M x K) @ (K x N) matmul on one R x C weight-stationary array."""
    F = folds(K, N, rows, cols)
    M = max(M, 1)
    if not double_buffered:
        return F * (2 * rows + cols + M - 2)
    return ws_cycles_for_folds(F, M, rows, cols)


def ws_cycles_for_folds(F: int, M: int, rows: int, cols: int) -> int:
    """Double-buffered cycles for F folds of M streamed rows (exact, constant time)."""
    exact = 8
    if F <= exact:
        return fold_schedule(F, M, rows, cols)[-1].end
    sched = fold_schedule(exact, M, rows, cols)
    period2 = sched[-1].stream_start - sched[-3].stream_start  # two folds, once periodic
    last = F - 1
    ref = exact - 1 if (last - (exact - 1)) % 2 == 0 else exact - 2
    stream = sched[ref].stream_start + (last - ref) // 2 * period2
    return stream + drain_cycles(M, rows, cols)


def steady_state_cycles_per_fold(M: int, rows: int, cols: int) -> float:
    """Long-run cycles per fold with double buffering: the streaming port (M), the weight bus
    (R), or the two banks cycling through load + stream + drain, whichever is slowest."""
    return max(M, rows, (M + 2 * rows + cols - 2) / 2)
