"""TPU memory layout: arrays are stored in (sublane, lane) tiles, padded up to whole tiles.

A 32-bit array's two minor dims are tiled (8, 128); packed types stack more rows per tile
(bf16: (16, 128), int8: (32, 128)). Which dims are minor is the layout pass's choice: like
XLA's layout assignment, tpusim gives every array the dim order whose tiling wastes least, so
an NHWC activation with 3 channels is not blown up 43x, but a (1000, 3) matrix still occupies
(1000, 128) or (8, 1000->1024) words. Rank-1 arrays pad to whole 128-lane rows; scalars take
one word.
"""

from __future__ import annotations

import math

import numpy as np

LANES = 128
SUBLANES = 8


def round_up(x: int, m: int) -> int:
    return -(-int(x) // int(m)) * int(m)


def sublane_tile(dtype: np.dtype) -> int:
    """Rows per (x, 128) tile for this element size: 8 for 32-bit, 16 for 16-bit, 32 for 8-bit."""
    itemsize = np.dtype(dtype).itemsize
    return SUBLANES * max(1, 4 // itemsize) if itemsize <= 4 else SUBLANES


def tiled_shape(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    if len(shape) == 0:
        return ()
    if len(shape) == 1:
        return (round_up(max(shape[0], 1), LANES),)
    return (*shape[:-2], round_up(max(shape[-2], 1), sublane_tile(dtype)), round_up(max(shape[-1], 1), LANES))


def padded_bytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Bytes the array occupies in HBM once padded to whole tiles, in its best layout
    (the pair of minor dims, in either order, that needs the least padding)."""
    itemsize = np.dtype(dtype).itemsize
    if len(shape) < 2:
        return math.prod(tiled_shape(shape, dtype)) * itemsize
    best = None
    for lane in range(len(shape)):
        for sub in range(len(shape)):
            if sub == lane:
                continue
            rest = [shape[d] for d in range(len(shape)) if d not in (lane, sub)]
            size = math.prod(tiled_shape((*rest, shape[sub], shape[lane]), dtype))
            best = size if best is None else min(best, size)
    return int(best) * itemsize
