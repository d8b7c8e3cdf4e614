"""The kinds of hardware work a primitive can be (each primitive's entry, in ir/primitives.py,
names its kind), and the call-like primitives the front end inlines."""

from __future__ import annotations

from enum import Enum


class Category(str, Enum):
    MXU = "mxu"  # matrix unit: dot_general, convolution
    ELEMENTWISE = "elementwise"  # VPU, one result per element
    TRANSCENDENTAL = "transcendental"  # VPU/EUP, costlier per element
    REDUCE = "reduce"  # VPU reductions over axes
    WINDOW = "window"  # pooling-style windowed reductions, cumulative ops
    MOVEMENT = "movement"  # layout/data movement (XLA fuses most of it)
    GATHER = "gather"  # indexed reads/writes, sort
    RANDOM = "random"  # counter-based RNG (threefry) on the VPU
    CONTROL = "control"  # scan / while / cond: keep their bodies
    COLLECTIVE = "collective"  # cross-device communication inserted by the SPMD pass
    TRANSFER = "transfer"  # HBM <-> host memory over the host link (activation offloading)


# Call-like primitives whose body is inlined by the front end (their semantics is the body).
INLINED_CALLS = frozenset({
    "jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
    "custom_vjp_call_jaxpr", "remat", "remat2", "checkpoint", "named_call", "custom_lin",
})

# Ops that XLA fuses into one VPU loop kernel with their neighbours.
FUSIBLE = frozenset({Category.ELEMENTWISE, Category.TRANSCENDENTAL, Category.REDUCE,
                     Category.MOVEMENT, Category.RANDOM})
# Kinds of work that compute one result per element, in the operand's layout.
PER_ELEMENT = frozenset({Category.ELEMENTWISE, Category.TRANSCENDENTAL})
