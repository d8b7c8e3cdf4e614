"""A cycle-accurate processing-element model of a weight-stationary systolic array.

Every PE (k, n) holds the weight W[k, n] of the current fold (two banks when weights are
double-buffered). Each cycle, activations move one PE to the right and partial sums one PE
down; PE (k, n) adds a * W[k, n] to the partial sum coming from above. Activation row m of
fold f enters array row k at cycle s_f + m + k (the skew), so the product it needs and the
partial sum it meets arrive together, and result (m, n) leaves the bottom of column n at
cycle s_f + m + R - 1 + n. Results of folds that split K are added in the f32 accumulators
below the array. The control (when a fold may load its weights and start streaming) follows
the rules of sim/mxu_timing.py, decided here from the array's own state each cycle.

It computes real values (bf16 products, f32 partial sums, in the hardware's summation order)
and counts cycles; it is vectorized over the R x C PEs, so a 128 x 128 array streaming 1024
rows takes well under a second. It doubles as the teaching view: `trace=True` records, per
cycle, how many PEs did useful work, and `frames=True` every PE's state per cycle (for small
arrays: the HTML report animates it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tpusim.sim.mxu import to_bf16_f32


@dataclass
class SystolicRun:
    output: np.ndarray  # (M, N) f32
    cycles: int
    folds: int
    stream_starts: list[int]
    fold_ends: list[int]
    macs: int  # useful multiply-accumulates
    busy_pe_cycles: list[int] = field(default_factory=list)  # per cycle, when traced
    frames: list["Frame"] = field(default_factory=list)  # per cycle, when asked for


@dataclass(frozen=True)
class Frame:
    """The array after one cycle: per PE the fold and row of the activation it holds (-1: idle),
    that activation and the partial sum it passes down; per weight bank its fold and the cycle
    its weights are in; the accumulators below the array."""

    cycle: int
    fold: np.ndarray  # (R, C) int
    row: np.ndarray  # (R, C) int
    act: np.ndarray  # (R, C) f32
    psum: np.ndarray  # (R, C) f32
    banks: tuple[tuple[int, int], ...]
    out: np.ndarray  # (M, N) f32 accumulators so far
    written: np.ndarray  # (M, N) bool: accumulators some fold has added into

    def array_utilization(self, rows: int, cols: int) -> float:
        """Useful MACs over what R x C PEs could do in the run's cycles."""
        return self.macs / (self.cycles * rows * cols)


def simulate_systolic(a: np.ndarray, w: np.ndarray, rows: int, cols: int, double_buffered: bool = True,
                      round_bf16: bool = True, trace: bool = False, frames: bool = False) -> SystolicRun:
    """Run (M x K) @ (K x N) through an R x C weight-stationary array, cycle by cycle."""
    a = np.asarray(a, np.float32)
    w = np.asarray(w, np.float32)
    if round_bf16:
        a, w = to_bf16_f32(a), to_bf16_f32(w)
    M, K = a.shape
    N = w.shape[1]
    kf, nf = math.ceil(K / rows), math.ceil(N / cols)
    F = kf * nf
    # Fold f = (n block, k block), k inner: the order SCALE-Sim uses. Padded operands per fold.
    a_pad = np.zeros((kf, M, rows), np.float32)
    for i in range(kf):
        blk = a[:, i * rows:(i + 1) * rows]
        a_pad[i, :, :blk.shape[1]] = blk
    w_fold = np.zeros((F, rows, cols), np.float32)
    fold_k = np.zeros(F, np.int64)
    fold_n = np.zeros(F, np.int64)
    for f in range(F):
        nb, kb = divmod(f, kf)
        blk = w[kb * rows:(kb + 1) * rows, nb * cols:(nb + 1) * cols]
        w_fold[f, :blk.shape[0], :blk.shape[1]] = blk
        fold_k[f], fold_n[f] = kb, nb
    out = np.zeros((M, nf * cols), np.float32)
    written = np.zeros(out.shape, bool)

    # PE registers: activation value and tags (fold, row m) travelling with it; partial sums.
    act = np.zeros((rows, cols), np.float32)
    tag_f = np.full((rows, cols), -1, np.int64)
    tag_m = np.zeros((rows, cols), np.int64)
    psum = np.zeros((rows, cols), np.float32)
    r_idx = np.arange(rows)[:, None]
    c_idx = np.arange(cols)[None, :]

    banks = 2 if double_buffered else 1
    bank_fold = [-1] * banks  # fold whose weights a bank holds (or is loading)
    bank_ready = [0] * banks
    remaining = np.zeros(F, np.int64)  # results of a fold still to come out of the array
    bus_free = 0
    next_load = 0
    starts: list[int] = [0] * F
    ends: list[int] = [0] * F
    next_stream = 0
    busy: list[int] = []
    shots: list[Frame] = []
    t = 0
    finished = 0
    while finished < F:
        # Weight bus: load the next fold into a free bank (free = its fold fully drained).
        if next_load < F and t >= bus_free:
            for b in range(banks):
                if bank_fold[b] < 0 or (remaining[bank_fold[b]] == 0 and bank_fold[b] < next_stream):
                    bank_fold[b] = next_load
                    bank_ready[b] = t + rows
                    bus_free = t + rows
                    next_load += 1
                    break
        # Input port: start streaming the next fold once its weights are in and the previous
        # fold has finished entering row 0.
        if next_stream < F:
            b = bank_fold.index(next_stream) if next_stream in bank_fold else -1
            prev_ok = next_stream == 0 or t >= starts[next_stream - 1] + M
            if b >= 0 and t >= bank_ready[b] and prev_ok:
                starts[next_stream] = t
                remaining[next_stream] = M * cols
                next_stream += 1
        # Move activations right; feed column 0 with the skewed rows.
        act[:, 1:] = act[:, :-1]
        tag_f[:, 1:] = tag_f[:, :-1]
        tag_m[:, 1:] = tag_m[:, :-1]
        feed_f = np.full(rows, -1, np.int64)
        feed_m = np.zeros(rows, np.int64)
        for f in range(max(0, next_stream - 2), next_stream):  # at most two folds in the skew
            m = t - starts[f] - np.arange(rows)
            ok = (m >= 0) & (m < M)
            feed_f[ok] = f
            feed_m[ok] = m[ok]
        valid_feed = feed_f >= 0
        act[:, 0] = np.where(valid_feed, a_pad[fold_k[np.maximum(feed_f, 0)], feed_m, np.arange(rows)], 0.0)
        tag_f[:, 0] = feed_f
        tag_m[:, 0] = feed_m
        # Multiply-accumulate: each PE uses the weights of the fold its activation belongs to.
        live = tag_f >= 0
        prod = np.where(live, act * w_fold[np.maximum(tag_f, 0), r_idx, c_idx], 0.0).astype(np.float32)
        above = np.vstack([np.zeros((1, cols), np.float32), psum[:-1]])
        psum = (above + prod).astype(np.float32)
        # The bottom row's partial sums are finished results: add them to the accumulators.
        bottom_live = live[-1]
        if bottom_live.any():
            cols_live = np.nonzero(bottom_live)[0]
            f_out = tag_f[-1, cols_live]
            m_out = tag_m[-1, cols_live]
            np.add.at(out, (m_out, fold_n[f_out] * cols + cols_live), psum[-1, cols_live])
            written[m_out, fold_n[f_out] * cols + cols_live] = True
            for f in np.unique(f_out):
                remaining[f] -= int(np.sum(f_out == f))
                if remaining[f] == 0:
                    ends[f] = t + 1
                    finished += 1
        if trace:
            busy.append(int(live.sum()))
        if frames:
            shots.append(Frame(t, np.where(live, tag_f, -1), tag_m.copy(), act.copy(), np.where(live, psum, 0.0),
                               tuple(zip(bank_fold, bank_ready)), out[:, :N].copy(), written[:, :N].copy()))
        t += 1
        if not live.any() and next_stream < F:  # idle: waiting for weights, skip ahead
            b_wait = [bank_ready[b] for b in range(banks) if bank_fold[b] == next_stream]
            target = max(b_wait[0], starts[next_stream - 1] + M if next_stream else 0) if b_wait else bus_free
            if target > t:
                if trace:
                    busy.extend([0] * (target - t))
                t = target
    return SystolicRun(out[:, :N], max(ends), F, starts, ends, M * K * N, busy, shots)
