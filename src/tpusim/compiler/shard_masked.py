"""Gathers from and scatter-adds into a table split along the dimension they index: each device
serves the indices that fall in its block and leaves the rest to the others.

This is how GSPMD (and Megatron's vocab-parallel embedding and cross-entropy) handles a table
split over a mesh axis, e.g. an embedding or the log-probabilities split along the vocabulary:
- gather: shift the indices by this device's block offset, gather locally, zero the rows whose
  index is not in the block; the true result is the sum over the axis (a partial sum, resolved
  by whoever reads it: an all-reduce of the small gathered result, never of the table);
- scatter-add: the same shift, with the updates of foreign indices zeroed; the result keeps
  the table's split.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from jax.extend.core import primitives as jp
from jax.lax import GatherScatterMode

from tpusim.ir.graph import Op, Value

Emit = Callable[[Op], None]


class _Builder:
    def __init__(self, emit: Emit, where: str, scope: str) -> None:
        self.emit, self.where, self.scope = emit, where, scope

    def op(self, prim: Any, ins: list[Value], shape: tuple[int, ...], dtype: Any, params: dict[str, Any],
           name: str = "", out: Value | None = None) -> Value:
        out = out or Value(tuple(shape), np.dtype(dtype), "temp", name=name)
        collective = isinstance(prim, str)
        self.emit(Op(prim if collective else prim.name, ins, [out], params, self.where, None if collective else prim,
                     {}, self.scope))
        return out

    def const(self, value: Any, dtype: Any) -> Value:
        v = Value((), np.dtype(dtype), "literal")
        v.const = np.asarray(value, dtype=dtype)
        return v

    def broadcast(self, v: Value, shape: tuple[int, ...], dims: tuple[int, ...]) -> Value:
        return self.op(jp.broadcast_in_dim_p, [v], shape, v.dtype,
                       {"shape": tuple(shape), "broadcast_dimensions": tuple(dims), "sharding": None})

    def block_offset(self, axes: tuple[str, ...], n: int, block: int, dtype: Any) -> Value:
        """This device's first index along a dimension split `n` ways over `axes`."""
        iota = self.op(jp.iota_p, [], (n,), dtype, {"dtype": np.dtype(dtype), "shape": (n,), "dimension": 0, "sharding": None})
        mine = self.op("shard_slice", [iota], (1,), dtype, {"axes": axes, "dim": 0})
        scalar = self.op(jp.reshape_p, [mine], (), dtype, {"new_sizes": (), "dimensions": None, "sharding": None})
        return self.op(jp.mul_p, [scalar, self.const(block, dtype)], (), dtype, {})

    def local_indices(self, idx: Value, component: int, axes: tuple[str, ...], n: int, block: int) -> tuple[Value, Value]:
        """(indices shifted into this device's block, whether each index lies in it: shape of
        the index batch, the index vector dimension being last)."""
        offset = self.block_offset(axes, n, block, idx.dtype)
        width = idx.shape[-1]
        shift = self.broadcast(offset, idx.shape, ())
        if width > 1:  # only the component that indexes the split dimension moves
            onehot = Value(idx.shape, idx.dtype, "literal")
            onehot.const = np.broadcast_to((np.arange(width) == component).astype(idx.dtype), idx.shape).copy()
            shift = self.op(jp.mul_p, [shift, onehot], idx.shape, idx.dtype, {})
        local = self.op(jp.sub_p, [idx, shift], idx.shape, idx.dtype, {})
        batch = idx.shape[:-1]
        starts = (0,) * (len(idx.shape) - 1) + (component,)
        comp = self.op(jp.slice_p, [local], batch + (1,), idx.dtype,
                       {"start_indices": starts, "limit_indices": batch + (component + 1,), "strides": None})
        comp = self.op(jp.reshape_p, [comp], batch, idx.dtype, {"new_sizes": batch, "dimensions": None, "sharding": None})
        low = self.op(jp.ge_p, [comp, self.const(0, idx.dtype)], batch, np.bool_, {})
        high = self.op(jp.lt_p, [comp, self.const(block, idx.dtype)], batch, np.bool_, {})
        return local, self.op(jp.and_p, [low, high], batch, np.bool_, {})

    def keep(self, mask: Value, value: Value, batch_positions: tuple[int, ...], out: Value | None = None) -> Value:
        """`value` where the index (broadcast along `batch_positions`) was this device's, else 0."""
        full_mask = self.broadcast(mask, value.shape, batch_positions)
        zero = self.broadcast(self.const(0, value.dtype), value.shape, ())
        return self.op(jp.select_n_p, [full_mask, zero, value], value.shape, value.dtype, {}, out=out)


def masked_gather(op: Op, operand: Value, idx: Value, out: Value, dim: int, axes: tuple[str, ...], n: int,
                  emit: Emit) -> None:
    """Gather from `operand` (this device's block of dimension `dim`) into `out` (a partial sum)."""
    b = _Builder(emit, op.where, op.scope)
    dn = op.params["dimension_numbers"]
    local, mine = b.local_indices(idx, list(dn.start_index_map).index(dim), axes, n, operand.shape[dim])
    params = dict(op.params, mode=GatherScatterMode.CLIP, fill_value=None)
    gathered = b.op(jp.gather_p, [operand, local], out.shape, out.dtype, params, name=out.name)
    batch_positions = tuple(i for i in range(len(out.shape)) if i not in dn.offset_dims)
    b.keep(mine, gathered, batch_positions, out=out)


def masked_scatter_add(op: Op, operand: Value, idx: Value, updates: Value, out: Value, dim: int,
                       axes: tuple[str, ...], n: int, emit: Emit) -> None:
    """Scatter-add `updates` into `operand` (this device's block of dimension `dim`)."""
    b = _Builder(emit, op.where, op.scope)
    dn = op.params["dimension_numbers"]
    local, mine = b.local_indices(idx, list(dn.scatter_dims_to_operand_dims).index(dim), axes, n, operand.shape[dim])
    batch_positions = tuple(i for i in range(len(updates.shape)) if i not in dn.update_window_dims)
    kept = b.keep(mine, updates, batch_positions)
    params = dict(op.params, mode=GatherScatterMode.FILL_OR_DROP)
    b.emit(Op(op.prim, [operand, local, kept], [out], params, op.where, op.jax_prim, {}, op.scope))

