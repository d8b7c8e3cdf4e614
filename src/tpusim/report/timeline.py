"""Where each kernel's engines are busy in time: the one source for the Perfetto/XProf trace
and the HTML report's timeline.

Times are the model's, not a measurement: within a kernel, DMA starts halfway through the
launch overhead, the matrix units and the vector unit run in the double-buffered steady
state after it, and a collective's bar spans its full duration (the part hidden behind
compute included). Loops are unrolled for their first MAX_LOOP_ITERATIONS_SHOWN iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

from tpusim.sim.estimate import Estimate
from tpusim.sim.device_timer import KernelTime

MAX_LOOP_ITERATIONS_SHOWN = 20

# Tracks in the order they are drawn; "XLA Ops" and "Async XLA Ops" are XProf's line names for
# the ops a TPU ran and for the asynchronous ones (collectives), so XProf users find them.
OPS_TRACK = "XLA Ops"
ASYNC_TRACK = "Async XLA Ops"


@dataclass(frozen=True)
class Segment:
    track: str  # OPS_TRACK, ASYNC_TRACK, "MXU 0".., "VPU", "DMA (HBM<->VMEM)"
    name: str
    start_s: float
    dur_s: float
    kernel: int  # index of the top-level kernel it belongs to
    kt: KernelTime
    depth: int = 0  # 0: a top-level kernel; 1 and more: inside a loop body


def tracks(matrix_units: int, matrix_unit: str = "MXU", vector_unit: str = "VPU") -> list[str]:
    return [OPS_TRACK, *(f"{matrix_unit} {m}" for m in range(matrix_units)), vector_unit, "DMA (HBM<->VMEM)", ASYNC_TRACK]


def segments(est: Estimate, matrix_units: int, vector_unit: str = "VPU") -> list[Segment]:
    out: list[Segment] = []
    for i, op in enumerate(est.ops):
        _kernel_segments(op, op.start_s, i, matrix_units, est.matrix_unit, vector_unit, out, 0)
    return out


def _kernel_segments(op: KernelTime, t0: float, index: int, n_mxu: int, mxu_word: str, vpu_word: str,
                     out: list[Segment], depth: int) -> None:
    out.append(Segment(OPS_TRACK, op.name, t0, op.time_s, index, op, depth))
    if op.children:
        body = sum(c.time_s for c in op.children)
        iterations = int(round(op.time_s / body)) if body else 1
        t = t0
        for _ in range(min(iterations, MAX_LOOP_ITERATIONS_SHOWN)):
            for child in op.children:
                _kernel_segments(child, t, index, n_mxu, mxu_word, vpu_word, out, depth + 1)
                t += child.time_s
            t += (op.time_s - body * iterations) / max(1, iterations)
        return
    if op.kind in ("collective", "transfer"):
        out.append(Segment(ASYNC_TRACK, op.name, t0, op.time_s + op.hidden_s, index, op, depth))
        return
    start = t0 + op.overhead_s
    if op.mxu_s:
        out.extend(Segment(f"{mxu_word} {m}", op.name, start, op.mxu_s, index, op, depth) for m in range(n_mxu))
    if op.vpu_s:
        out.append(Segment(vpu_word, op.name, start, op.vpu_s, index, op, depth))
    if op.dma_s:
        out.append(Segment("DMA (HBM<->VMEM)", op.name, t0 + op.overhead_s / 2, op.dma_s, index, op, depth))
