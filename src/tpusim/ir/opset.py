"""Which JAX primitives tpusim supports, and what kind of hardware work each one is.

One table, one place: adding a primitive means adding it here (its category drives fusion,
counting and timing). A primitive that is not here is an UnsupportedOpError at compile time.
"""

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


_TABLE: dict[Category, tuple[str, ...]] = {
    Category.MXU: ("dot_general", "conv_general_dilated", "ragged_dot_general"),
    Category.ELEMENTWISE: (
        "add", "sub", "mul", "div", "rem", "max", "min", "neg", "abs", "sign", "floor", "ceil",
        "round", "integer_pow", "square", "select_n", "clamp", "and", "or", "not", "xor",
        "eq", "ne", "lt", "le", "gt", "ge", "eq_to", "lt_to", "le_to", "is_finite", "nextafter", "shift_left",
        "shift_right_logical", "shift_right_arithmetic", "convert_element_type", "copy", "copy_p",
        "stop_gradient", "reduce_precision", "real", "imag", "complex", "conj", "population_count", "clz",
        "add_any", "optimization_barrier", "bitcast_convert_type", "sharding_constraint", "reshard",
        "name",  # checkpoint_name: an identity that tags a value for name-based remat policies
    ),
    Category.TRANSCENDENTAL: (
        "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "rsqrt", "sqrt", "cbrt",
        "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "asinh", "acosh",
        "atanh", "erf", "erfc", "erf_inv", "pow", "lgamma", "digamma",
    ),
    Category.REDUCE: (
        "reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
        "reduce_xor", "argmax", "argmin", "reduce",
    ),
    Category.WINDOW: (
        "reduce_window_max", "reduce_window_min", "reduce_window_sum", "reduce_window", "select_and_gather_add",
        "select_and_scatter_add", "cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp",
    ),
    Category.MOVEMENT: (
        "broadcast_in_dim", "reshape", "squeeze", "expand_dims", "transpose", "slice",
        "concatenate", "pad", "rev", "iota", "split", "dynamic_slice", "dynamic_update_slice",
        "stack", "unstack", "tile",
    ),
    Category.GATHER: ("gather", "scatter", "scatter-add", "scatter_add", "scatter-mul",
                      "scatter_mul", "scatter-min", "scatter_min", "scatter-max", "scatter_max",
                      "sort", "top_k",
                      "fft"),  # an FFT's butterflies are strided, irregular access: a kernel of its own
    Category.RANDOM: ("random_bits", "random_seed", "random_wrap", "random_unwrap",
                      "threefry2x32", "random_fold_in", "random_split"),
    Category.CONTROL: ("scan", "while", "cond", "shard_map"),
    # tpusim's collectives, and JAX's named-axis ones as written inside shard_map bodies (the
    # SPMD pass turns the latter into the former: compiler/manual.py)
    Category.COLLECTIVE: ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "collective_permute",
                          "shard_slice", "psum", "psum_invariant", "pmax", "pmin", "ppermute", "pvary",
                          "pbroadcast", "axis_index"),
    # jax.device_put to or from host memory (the front end names the direction)
    Category.TRANSFER: ("host_offload", "host_fetch", "device_put"),
}

CATEGORY: dict[str, Category] = {p: cat for cat, prims in _TABLE.items() for p in prims}

# Call-like primitives whose body is inlined by the front end (their semantics is the body).
INLINED_CALLS = frozenset({
    "jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
    "custom_vjp_call_jaxpr", "remat", "remat2", "checkpoint", "named_call", "custom_lin",
})

# Ops that XLA fuses into one VPU loop kernel with their neighbours.
FUSIBLE = frozenset({Category.ELEMENTWISE, Category.TRANSCENDENTAL, Category.REDUCE,
                     Category.MOVEMENT, Category.RANDOM})
# Ops that may join a matmul/conv epilogue: per-element work on the accumulator tile.
EPILOGUE = frozenset({Category.ELEMENTWISE, Category.TRANSCENDENTAL})
EPILOGUE_MOVEMENT = frozenset({"broadcast_in_dim", "reshape", "squeeze", "expand_dims"})


def category_of(prim: str) -> Category | None:
    return CATEGORY.get(prim)


def supported_primitives() -> list[str]:
    return sorted(CATEGORY)
