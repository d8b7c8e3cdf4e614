"""Shapes of the two MXU ops in canonical form, shared by counting, tiling and numerics.

dot_general -> (B, M, K, N); ragged_dot_general (grouped matmuls: MoE experts) -> (M, K, N,
groups); conv_general_dilated -> batch/feature/spatial sizes with its strides, paddings,
dilations and groups, whatever the user's dimension order was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tpusim.ir.graph import Op


@dataclass(frozen=True)
class DotGeometry:
    lhs_batch: tuple[int, ...]
    rhs_batch: tuple[int, ...]
    lhs_contract: tuple[int, ...]
    rhs_contract: tuple[int, ...]
    lhs_free: tuple[int, ...]
    rhs_free: tuple[int, ...]
    B: int
    M: int
    K: int
    N: int

    @property
    def macs(self) -> int:
        return self.B * self.M * self.K * self.N


def dot_geometry(op: Op) -> DotGeometry:
    lhs, rhs = op.inputs[0].shape, op.inputs[1].shape
    (lc, rc), (lb, rb) = op.params["dimension_numbers"]
    lc, rc, lb, rb = (tuple(int(a) for a in x) for x in (lc, rc, lb, rb))
    lf = tuple(i for i in range(len(lhs)) if i not in lc and i not in lb)
    rf = tuple(i for i in range(len(rhs)) if i not in rc and i not in rb)
    size = lambda shape, axes: math.prod(shape[a] for a in axes)  # noqa: E731
    return DotGeometry(lb, rb, lc, rc, lf, rf, size(lhs, lb), size(lhs, lf), size(lhs, lc), size(rhs, rf))


@dataclass(frozen=True)
class RaggedGeometry:
    """A ragged dot as the MXU runs it: one M x K by K x N product whose rows (or, for a weight
    gradient, whose contraction) are cut into groups, each against its own matrix. Every row
    meets one group's matrix, so the work is M x K x N whatever the group sizes."""

    M: int
    K: int
    N: int
    groups: int
    rhs_grouped: bool  # the rhs holds one matrix per group (the forward and input-gradient form)

    @property
    def macs(self) -> int:
        return self.M * self.K * self.N


def ragged_geometry(op: Op) -> RaggedGeometry:
    dn = op.params["ragged_dot_dimension_numbers"]
    (lc, rc), (lb, rb) = dn.dot_dimension_numbers
    lhs, rhs = op.inputs[0].shape, op.inputs[1].shape
    groups = int(op.inputs[2].shape[-1]) if op.inputs[2].shape else 1
    rhs_group = tuple(int(a) for a in dn.rhs_group_dimensions)
    size = lambda shape, axes: math.prod(shape[int(a)] for a in axes)  # noqa: E731
    K = size(lhs, lc)
    M = math.prod(lhs) // max(1, K * size(lhs, lb)) * size(lhs, lb)
    N = math.prod(rhs) // max(1, size(rhs, rc) * (size(rhs, rhs_group) if rhs_group else 1))
    return RaggedGeometry(M, K, N, groups, bool(rhs_group))


@dataclass(frozen=True)
class ConvGeometry:
    lhs_spec: tuple[int, ...]  # (batch dim, feature dim, spatial dims...)
    rhs_spec: tuple[int, ...]  # (out-feature dim, in-feature dim, spatial dims...)
    out_spec: tuple[int, ...]
    batch: int
    in_features: int  # total input channels
    out_features: int
    groups: int
    batch_groups: int
    in_spatial: tuple[int, ...]
    kernel_spatial: tuple[int, ...]
    out_spatial: tuple[int, ...]
    strides: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    lhs_dilation: tuple[int, ...]
    rhs_dilation: tuple[int, ...]

    @property
    def taps(self) -> int:
        return math.prod(self.kernel_spatial)

    @property
    def in_per_group(self) -> int:
        return self.in_features // self.groups

    @property
    def out_positions(self) -> int:
        return math.prod(self.out_spatial)

    @property
    def macs(self) -> int:
        """MACs as the MXU executes them: every tap, padding positions included, less the
        all-zero rows of a dilated input (`dilated_row_fraction`)."""
        out_batch = self.batch // self.batch_groups
        rows = max(1, round(out_batch * self.out_positions * self.dilated_row_fraction()))
        return rows * self.out_features * self.in_per_group * self.taps

    def _valid_pairs(self, d: int) -> int:
        """(output index, tap) pairs along spatial dim `d` that read real input."""
        n_in, k, o = self.in_spatial[d], self.kernel_spatial[d], self.out_spatial[d]
        s, lo = self.strides[d], self.padding[d][0]
        ld, rd = self.lhs_dilation[d], self.rhs_dilation[d]
        span = (n_in - 1) * ld
        return sum(1 for oi in range(o) for ki in range(k)
                   if 0 <= oi * s + ki * rd - lo <= span and (oi * s + ki * rd - lo) % ld == 0)

    def valid_tap_pairs(self) -> int:
        """(output position, tap) pairs that read real input (not padding or dilation holes)."""
        return math.prod(self._valid_pairs(d) for d in range(len(self.in_spatial)))

    def dilated_row_fraction(self) -> float:
        """Share of (output row, tap) pairs along the major spatial dim that meet a real input
        row when the input is dilated (the input gradient of a strided conv): the rest meet
        only inserted zeros, and a TPU conv kernel skips them (whole rows of the streamed
        operand); holes along the minor spatial dims sit inside streamed rows and are
        multiplied. 1 for an undilated input."""
        if not self.in_spatial or self.lhs_dilation[0] <= 1:
            return 1.0
        return self._valid_pairs(0) / (self.out_spatial[0] * self.kernel_spatial[0])

    @property
    def macs_unpadded(self) -> int:
        """MACs that touch real input: XLA's cost_analysis convention."""
        out_batch = self.batch // self.batch_groups
        return out_batch * self.out_features * self.in_per_group * self.valid_tap_pairs()


def conv_geometry(op: Op) -> ConvGeometry:
    p = op.params
    dn = p["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = (tuple(int(a) for a in s) for s in (dn.lhs_spec, dn.rhs_spec, dn.out_spec))
    lhs, rhs, out = op.inputs[0].shape, op.inputs[1].shape, op.outputs[0].shape
    nsp = len(lhs_spec) - 2
    return ConvGeometry(
        lhs_spec=lhs_spec,
        rhs_spec=rhs_spec,
        out_spec=out_spec,
        batch=lhs[lhs_spec[0]],
        in_features=lhs[lhs_spec[1]],
        out_features=rhs[rhs_spec[0]],
        groups=int(p["feature_group_count"]),
        batch_groups=int(p["batch_group_count"]),
        in_spatial=tuple(lhs[d] for d in lhs_spec[2:]),
        kernel_spatial=tuple(rhs[d] for d in rhs_spec[2:]),
        out_spatial=tuple(out[d] for d in out_spec[2:]),
        strides=tuple(int(s) for s in p["window_strides"]),
        padding=tuple((int(a), int(b)) for a, b in p["padding"]),
        lhs_dilation=tuple(int(s) for s in (p["lhs_dilation"] or (1,) * nsp)),
        rhs_dilation=tuple(int(s) for s in (p["rhs_dilation"] or (1,) * nsp)),
    )
