"""Learner views: what the MXU does with the user's own model.

- `systolic_demo`: a small corner of the model's first matmul/conv (its real weights, and real
  activations when the caller gives inputs) run cycle by cycle through a small weight-stationary
  array by the PE-level model (sim/systolic.py); the frames drive the report's animation.
- `block_plans`: how the heaviest matmuls/convs are cut into MXU folds and VMEM blocks, with the
  padding the MXU computes for nothing.
- `bf16_rounding`: what rounding to bf16 (the MXU's input type) does to those real values.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax import lax

from tpusim.ir.geometry import dot_geometry
from tpusim.program.program import Kernel, Program
from tpusim.sim.estimate import Estimate
from tpusim.sim.mxu import BF16, to_bf16_f32
from tpusim.sim.mxu_timing import ws_cycles
from tpusim.sim.numerics import mxu_operands, values_before
from tpusim.sim.systolic import simulate_systolic

# The teaching array and the corner of the user's matmul it runs: small enough to watch, with
# two K folds and two N folds so weight double-buffering and partial sums across folds show.
DEMO_ARRAY = 8
DEMO_ROWS, DEMO_K, DEMO_N = 6, 16, 16


def first_mxu_kernel(program: Program) -> tuple[int, Kernel] | None:
    """The first top-level kernel that runs a plain matmul or ungrouped conv on the MXU."""
    for i, k in enumerate(program.kernels):
        if k.mxu is None or k.mxu.engine != "mxu" or k.kind not in ("matmul", "conv"):
            continue
        anchor = k.anchor
        if anchor.prim == "dot_general" or (anchor.prim == "conv_general_dilated"
                                            and int(anchor.params["feature_group_count"]) == 1
                                            and int(anchor.params["batch_group_count"]) == 1):
            return i, k
    return None


def _as_matrices(anchor: Any, lhs: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A, W) with A @ W = the op's result as an M x N matrix (batch 0 of a batched dot; a
    conv's input patches of its first image against its filter, taps folded into K as the MXU
    plan folds them)."""
    if anchor.prim == "dot_general":
        g = dot_geometry(anchor)
        a = np.transpose(lhs, (*g.lhs_batch, *g.lhs_free, *g.lhs_contract)).reshape(max(1, g.B), g.M, g.K)[0]
        w = np.transpose(rhs, (*g.rhs_batch, *g.rhs_contract, *g.rhs_free)).reshape(max(1, g.B), g.K, g.N)[0]
        return a, w
    p = anchor.params
    dn = p["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    spatial = tuple(rhs.shape[d] for d in rhs_spec[2:])
    # the first image only: the demo shows a few rows, and a batch's patches are taps x larger
    # than the batch (ResNet-50's stem at batch 128: about 1 GB)
    first = np.take(lhs, [0], axis=lhs_spec[0])
    patches = lax.conv_general_dilated_patches(
        jax.numpy.asarray(first, np.float32), spatial, p["window_strides"], p["padding"], p["lhs_dilation"],
        p["rhs_dilation"], dn, precision=lax.Precision.HIGHEST)
    patches = np.asarray(patches)
    a = np.transpose(patches, (out_spec[0], *out_spec[2:], out_spec[1])).reshape(-1, patches.shape[out_spec[1]])
    w = np.transpose(rhs, (rhs_spec[1], *rhs_spec[2:], rhs_spec[0])).reshape(-1, rhs.shape[rhs_spec[0]])
    return a, w


def random_inputs(program: Program) -> list[Any]:
    """Seeded stand-ins for the program's inputs when the caller gave shapes only: standard
    normals for floating-point arrays, zeros for integers and booleans."""
    rng = np.random.default_rng(0)
    out: list[Any] = []
    for v in program.inputs:
        if v.dtype.kind == "f":
            out.append(rng.standard_normal(v.shape).astype(v.dtype))
        else:
            out.append(np.zeros(v.shape, v.dtype))
    return out


def _operands(program: Program, index: int, kernel: Kernel, inputs: list[Any] | None) -> tuple[np.ndarray, np.ndarray, str]:
    """The kernel's operands as the program computes them from `inputs` (the model's weights
    are its own; without inputs, activations come from seeded random-normal inputs)."""
    source = "the model's weights and the activations of your inputs"
    if inputs is None:
        inputs, source = random_inputs(program), "the model's weights; activations from random-normal inputs (the script gave shapes, not data)"
    env = values_before(program, inputs, index)
    lhs, rhs = (np.asarray(x, np.float32) for x in mxu_operands(kernel, env)[:2])
    return lhs, rhs, source


def systolic_demo(program: Program, inputs: list[Any] | None = None, mxu_shape: tuple[int, int] = (128, 128)) -> dict[str, Any] | None:
    found = first_mxu_kernel(program)
    if found is None:
        return None
    if inputs is None and any(v.dtype.kind not in "biuf" for v in program.inputs):
        return None  # a PRNG key or other opaque input: no stand-in values to run the program on
    index, kernel = found
    anchor = kernel.anchor
    lhs, rhs, source = _operands(program, index, kernel, inputs)
    a_full, w_full = _as_matrices(anchor, lhs, rhs)
    rows_shown, K = a_full.shape  # a conv's: the first image's output pixels
    N = w_full.shape[1]
    M = int(kernel.mxu.M) if anchor.prim == "conv_general_dilated" else rows_shown  # type: ignore[union-attr]
    rows = np.unique(np.linspace(0, rows_shown - 1, min(DEMO_ROWS, rows_shown)).astype(int))
    a, w = a_full[rows, :DEMO_K], w_full[:DEMO_K, :DEMO_N]
    run = simulate_systolic(a, w, DEMO_ARRAY, DEMO_ARRAY, frames=True)
    reference = to_bf16_f32(a).astype(np.float64) @ to_bf16_f32(w).astype(np.float64)
    R = C = DEMO_ARRAY
    r4 = lambda x: np.round(np.asarray(x, np.float64), 4).tolist()  # noqa: E731
    return {
        "kernel": kernel.name, "where": kernel.where, "prim": anchor.prim, "source": source,
        "full": {"M": int(M), "K": int(K), "N": int(N)},
        "rows": [int(r) for r in rows], "k": int(a.shape[1]), "n": int(w.shape[1]),
        "array": DEMO_ARRAY, "a": r4(to_bf16_f32(a)), "w": r4(to_bf16_f32(w)),
        "cycles": run.cycles, "folds": run.folds, "stream_starts": run.stream_starts, "fold_ends": run.fold_ends,
        "result": r4(run.output), "max_abs_diff": float(np.max(np.abs(run.output - reference))) if reference.size else 0.0,
        "full_cycles": ws_cycles(int(M), int(K), int(N), *mxu_shape),
        "mxu_shape": list(mxu_shape),
        "frames": [{"t": f.cycle, "fold": f.fold.reshape(R * C).tolist(), "row": f.row.reshape(R * C).tolist(),
                    "act": r4(f.act.reshape(R * C)), "psum": r4(f.psum.reshape(R * C)),
                    "banks": [list(b) for b in f.banks], "out": r4(f.out),
                    "written": f.written.astype(int).tolist()} for f in run.frames],
        "operands": (a_full, w_full),  # for bf16_rounding; dropped before serializing
    }


def bf16_rounding(a: np.ndarray, w: np.ndarray, samples: int = 6) -> dict[str, Any]:
    """Sample values of both operands in f32 and bf16 (with bf16's bits), and what rounding
    does over the whole operands."""
    out: dict[str, Any] = {}
    for name, x in (("activations", a), ("weights", w)):
        flat = np.asarray(x, np.float32).reshape(-1)[: 1 << 20]
        nz = flat[flat != 0]
        rounded = nz.astype(BF16).astype(np.float32)
        rel = np.abs(rounded - nz) / np.abs(nz) if nz.size else np.zeros(0)
        picks = nz[np.linspace(0, nz.size - 1, min(samples, nz.size)).astype(int)] if nz.size else nz
        rows = []
        for v in picks:
            b = int(np.array(v, np.float32).astype(BF16).view(np.uint16))
            bits = f"{b:016b}"
            bv = float(np.array(v, np.float32).astype(BF16).astype(np.float32))
            rows.append({"f32": float(v), "bf16": bv, "bits": f"{bits[0]} {bits[1:9]} {bits[9:]}",
                         "rel_error": abs(bv - float(v)) / abs(float(v))})
        out[name] = {"samples": rows, "count": int(flat.size), "changed": float(np.mean(rel > 0)) if rel.size else 0.0,
                     "mean_rel_error": float(rel.mean()) if rel.size else 0.0,
                     "max_rel_error": float(rel.max()) if rel.size else 0.0}
    return out


def block_plans(program: Program, est: Estimate, top: int = 8) -> list[dict[str, Any]]:
    """The heaviest matmul/conv kernels' MXU plans: padded problem, blocks, folds and waste."""
    timed = [(kt.time_s, i, k) for i, (k, kt) in enumerate(zip(program.kernels, est.ops)) if k.mxu is not None]
    out = []
    for t, i, k in sorted(timed, key=lambda x: -x[0])[:top]:
        p = k.mxu
        assert p is not None
        out.append({"kernel": k.name, "index": i, "time_s": t, "where": k.where, "engine": p.engine,
                    "precision": p.precision, "passes": p.passes, "batch": p.batch, "taps": p.taps,
                    "M": p.M, "K": p.K, "N": p.N, "Mp": p.Mp, "Kp": p.Kp, "Np": p.Np, "tm": p.tm, "tk": p.tk, "tn": p.tn,
                    "grid": list(p.grid), "vmem_bytes": p.vmem_bytes, "useful_flops": p.useful_flops,
                    "issued_flops": p.issued_flops, "waste": 1 - p.useful_flops / p.issued_flops if p.issued_flops else 0.0})
    return out
