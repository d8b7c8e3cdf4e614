"""Numerics of the matrix unit, block by block.

The MXU multiplies bf16 operands and accumulates in f32. A product of two bf16 numbers is exact
in f32, so `bf16(a).astype(f32) @ bf16(b).astype(f32)` reproduces one MXU pass exactly up to the
order of the f32 additions; the K dimension is accumulated block by block in the plan's order.
Multi-pass precisions split each f32 operand into bf16 parts (hi + mid + lo) and sum the cross
products smallest first, as XLA does on TPU. TPU v1 quantizes to int8 and accumulates in int32.
"""

from __future__ import annotations

import itertools

import ml_dtypes
import numpy as np

from tpusim.ir.geometry import ConvGeometry
from tpusim.program.program import MxuPlan

BF16 = ml_dtypes.bfloat16


def to_bf16_f32(x: np.ndarray) -> np.ndarray:
    """Round to bf16 (nearest even), returned as f32 so that BLAS can multiply it."""
    return np.asarray(x, dtype=np.float32).astype(BF16).astype(np.float32)


def split_bf16(x: np.ndarray, parts: int) -> list[np.ndarray]:
    """x ~= sum of `parts` bf16 numbers (hi, mid, lo), each stored as f32."""
    rest = np.asarray(x, dtype=np.float32)
    out = []
    for _ in range(parts):
        p = to_bf16_f32(rest)
        out.append(p)
        rest = rest - p
    return out


# Cross products per precision, listed smallest first (the order XLA accumulates them in).
_TERMS = {
    "bf16": [(0, 0)],
    "bf16_3x": [(1, 0), (0, 1), (0, 0)],
    "bf16_6x": [(2, 0), (1, 1), (0, 2), (1, 0), (0, 1), (0, 0)],
}
_PARTS = {"bf16": 1, "bf16_3x": 2, "bf16_6x": 3}


def prepare_operand(x: np.ndarray, precision: str, axis_scale: int | None = None) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Operand as the MXU sees it: bf16 parts, or (int8 values, scale) for an int8 MXU."""
    if precision == "int":
        return [np.asarray(x).astype(np.int64)], None
    if precision == "int8":
        x = np.asarray(x, dtype=np.float32)
        amax = np.max(np.abs(x), axis=axis_scale, keepdims=True) if axis_scale is not None else np.max(np.abs(x))
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        q = np.clip(np.rint(x / scale), -127, 127)
        return [q.astype(np.float64)], scale
    return split_bf16(x, _PARTS[precision]), None


def _accumulate(acc: np.ndarray, a_parts: list[np.ndarray], b_parts: list[np.ndarray], precision: str) -> np.ndarray:
    if precision in ("int", "int8"):
        return acc + np.matmul(a_parts[0], b_parts[0])
    for i, j in _TERMS[precision]:
        acc += np.matmul(a_parts[i], b_parts[j])
    return acc


def _acc_dtype(precision: str) -> type:
    return np.int64 if precision == "int" else (np.float64 if precision == "int8" else np.float32)


def matmul_blocks(a: np.ndarray, b: np.ndarray, plan: MxuPlan, strict: bool = False) -> np.ndarray:
    """(B, M, K) x (B, K, N) -> (B, M, N) accumulator, K walked in blocks of plan.tk.

    Grid steps along M and N are independent, so by default they run batched (same blocks, same
    K order; BLAS may sum the products inside one block in another f32 order);
    `strict=True` walks every (m, n, k) grid step separately, for tests and teaching.
    """
    prec = plan.precision
    a_parts, a_scale = prepare_operand(a, prec)
    b_parts, b_scale = prepare_operand(b, prec, axis_scale=-2 if prec == "int8" else None)
    B, M, K = a.shape
    N = b.shape[-1]
    acc = np.zeros((B, M, N), dtype=_acc_dtype(prec))
    m_step, n_step = (plan.tm, plan.tn) if strict else (max(M, 1), max(N, 1))
    for m0 in range(0, M, m_step):
        for n0 in range(0, N, n_step):
            blk = acc[:, m0:m0 + m_step, n0:n0 + n_step]
            for k0 in range(0, K, plan.tk):
                ap = [p[:, m0:m0 + m_step, k0:k0 + plan.tk] for p in a_parts]
                bp = [p[:, k0:k0 + plan.tk, n0:n0 + n_step] for p in b_parts]
                blk = _accumulate(blk, ap, bp, prec)
            acc[:, m0:m0 + m_step, n0:n0 + n_step] = blk
    if prec == "int8":
        return (acc * a_scale * b_scale).astype(np.float32)
    return acc


def conv_taps(x: np.ndarray, w: np.ndarray, g: ConvGeometry, plan: MxuPlan) -> np.ndarray:
    """A convolution as a sum over filter taps of (pixels x in-channels) @ (in x out) matmuls.

    x: lhs in the user's layout, w: rhs in the user's layout. Returns the f32 accumulator in the
    output's layout. Channels are split into `groups` independent matmuls.
    """
    prec = plan.precision
    nsp = len(g.in_spatial)
    xc = np.transpose(x, (g.lhs_spec[0], *g.lhs_spec[2:], g.lhs_spec[1]))  # N, *spatial, C
    wc = np.transpose(w, (*g.rhs_spec[2:], g.rhs_spec[1], g.rhs_spec[0]))  # *taps, Cin/g, Cout
    if any(d > 1 for d in g.lhs_dilation):
        shape = (xc.shape[0], *[(n - 1) * d + 1 for n, d in zip(g.in_spatial, g.lhs_dilation)], xc.shape[-1])
        dil = np.zeros(shape, dtype=xc.dtype)
        dil[(slice(None), *[slice(None, None, d) for d in g.lhs_dilation], slice(None))] = xc
        xc = dil
    pads = [(0, 0)] + [(max(lo, 0), max(hi, 0)) for lo, hi in g.padding] + [(0, 0)]
    xc = np.pad(xc, pads)
    crop = tuple([slice(None)] + [slice(max(-lo, 0), xc.shape[1 + i] - max(-hi, 0)) for i, (lo, hi) in enumerate(g.padding)] + [slice(None)])
    xc = xc[crop]
    a_parts, a_scale = prepare_operand(xc, prec)
    b_parts, b_scale = prepare_operand(wc, prec, axis_scale=tuple(range(nsp + 1)) if prec == "int8" else None)  # type: ignore[arg-type]
    n_out = g.batch
    P = g.out_positions
    G, Cg, Og = g.groups, g.in_per_group, g.out_features // g.groups
    acc = np.zeros((G, n_out * P, Og), dtype=_acc_dtype(prec))
    for tap in itertools.product(*[range(k) for k in g.kernel_spatial]):
        window = tuple(
            slice(t * rd, t * rd + (o - 1) * s + 1, s)
            for t, rd, o, s in zip(tap, g.rhs_dilation, g.out_spatial, g.strides)
        )
        idx = (slice(None), *window, slice(None))
        ap = [p[idx].reshape(n_out * P, G, Cg).transpose(1, 0, 2) for p in a_parts]
        bp = [p[tap].reshape(Cg, G, Og).transpose(1, 0, 2) for p in b_parts]
        for k0 in range(0, Cg, plan.tk):
            acc = _accumulate(acc, [q[:, :, k0:k0 + plan.tk] for q in ap], [q[:, k0:k0 + plan.tk, :] for q in bp], prec)
    out = acc.transpose(1, 0, 2).reshape(n_out, *g.out_spatial, G * Og)
    if prec == "int8":
        scale_b = np.asarray(b_scale).reshape(-1) if np.ndim(b_scale) else b_scale
        out = (out * a_scale * scale_b).astype(np.float32)
    inv = np.argsort((g.out_spec[0], *g.out_spec[2:], g.out_spec[1]))
    return np.transpose(out, inv)
