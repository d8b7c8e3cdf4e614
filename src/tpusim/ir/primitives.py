"""Everything tpusim knows about each JAX primitive: one entry per primitive, in one table.

An entry says what kind of hardware work the primitive is (its `Category`), how many FLOPs and
transcendentals it costs (`work`), whether canonicalization may drop it (`identity`), how the
fusion, buffer-sharing and SPMD passes may treat it (`epilogue`, `reads_in_order`,
`loop_indexing`, `in_place`, `shard`), and, for the collectives tpusim inserts, what they
compute on the values of one device group (`collective`). The passes read these fields instead
of keeping their own lists of primitive names, so adding a primitive is adding an entry here
(and a record to tests/test_primitives.py, which walks the whole table against the reference
interpreter). A primitive that is not here is an UnsupportedOpError at compile time.
`tpusim ops` prints the table.

The SPMD rules themselves live in compiler/shard.py, keyed by the names entries give in
`shard`; a test checks that every name has its rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, NamedTuple

from tpusim.ir.geometry import conv_geometry, dot_geometry, ragged_geometry
from tpusim.ir.graph import Op
from tpusim.ir.opset import Category


class Work(NamedTuple):
    """Arithmetic of one op: FLOPs, transcendentals, and FLOPs as XLA counts them (None: same)."""

    flops: float
    transcendentals: float = 0.0
    flops_xla: float | None = None


class Identity(str, Enum):
    """When canonicalization may replace an op by its operand."""

    NEVER = "never"
    ALWAYS = "always"  # stop_gradient, optimization_barrier, copy, sharding annotations
    SAME_TYPE = "same type"  # a reshape or convert whose result has its operand's shape and dtype


Semantics = Callable[[list[Any], int, dict[str, Any], Any], Any]


@dataclass(frozen=True)
class Primitive:
    """What tpusim knows about one primitive (see the module docstring for each field's user)."""

    name: str
    category: Category
    work: Callable[[Op], Work] | None  # None: a control op, costed as its bodies (ir/counts.py)
    identity: Identity = Identity.NEVER
    epilogue: bool = False  # may run on a matmul/conv accumulator tile (per element, same layout)
    reads_in_order: bool = False  # reads its operands in the order it writes its result
    loop_indexing: bool = False  # a loop kernel reads it as cheaply as its operand (slice, pad)
    in_place: bool = False  # writes into its first operand's buffer (XLA's buffer sharing)
    shard: str = "replicate"  # the SPMD rule (compiler/shard.py); "replicate": whole on each device
    collective: Semantics | None = None  # (group's values, position, params, numpy-like) -> result
    doc: str = ""

    def rules(self) -> dict[str, str]:
        """The rules this entry gives the pipeline, as `tpusim ops` prints them."""
        return {
            "category": self.category.value,
            "work": self.work.__name__.lstrip("_") if self.work else "bodies",
            "identity": self.identity.value,
            "epilogue": "yes" if self.epilogue else "",
            "in order": "yes" if self.reads_in_order else "",
            "in place": "yes" if self.in_place else "",
            "shard": self.shard,
            "collective": self.collective.__name__.lstrip("_") if self.collective else "",
        }


# ----- work (FLOPs), by kind of primitive ---------------------------------------------------

def _out_elems(op: Op) -> float:
    return float(sum(v.size for v in op.outputs))


def _dot(op: Op) -> Work:
    return Work(2.0 * dot_geometry(op).macs)


def _ragged_dot(op: Op) -> Work:
    return Work(2.0 * ragged_geometry(op).macs)


def _conv(op: Op) -> Work:
    """Every tap the MXU executes (padding included); XLA counts only taps on real input."""
    g = conv_geometry(op)
    return Work(2.0 * g.macs, 0.0, 2.0 * g.macs_unpadded)


def _per_element(op: Op) -> Work:
    """One FLOP per result element; on complex values a (real, imaginary) pair of them each, and
    a complex product or quotient six."""
    f = _out_elems(op)
    if any(v.dtype.kind == "c" for v in op.inputs):
        f *= 6.0 if op.prim in ("mul", "div") else 2.0
    return Work(f)


def _integer_pow(op: Op) -> Work:
    return Work(_out_elems(op) * max(1, abs(int(op.params["y"])) - 1))


def _free(op: Op) -> Work:
    """No arithmetic: data movement, type changes and annotations (bytes only)."""
    return Work(0.0)


def _transcendental(op: Op) -> Work:
    return Work(0.0, _out_elems(op))


def _logistic(op: Op) -> Work:
    """1 / (1 + exp(-x)): one transcendental and three arithmetic FLOPs per element."""
    return Work(3.0 * _out_elems(op), _out_elems(op))


def _reduction(op: Op) -> Work:
    """(inputs - outputs) combines."""
    return Work(max(0.0, op.inputs[0].size - _out_elems(op)))


def _generic_reduce(op: Op) -> Work:
    """lax.reduce with its own combiner: every op of the combiner per combine."""
    body = op.params.get("jaxpr")
    combines = max(0, op.inputs[0].size - op.outputs[0].size)
    return Work(float(combines * max(1, len(getattr(getattr(body, "jaxpr", body), "eqns", ()) or ()))))


def _window_size(op: Op) -> int:
    dims = op.params.get("window_dimensions")
    return math.prod(dims) if dims else 1


def _window(op: Op) -> Work:
    """(window - 1) combines per result element."""
    return Work(_out_elems(op) * max(0, _window_size(op) - 1))


def _select_in_window(op: Op) -> Work:
    """A max-pool's gradient: one compare-and-select per input element per window tap."""
    return Work(float(op.inputs[0].size * _window_size(op)))


def _cumulative(op: Op) -> Work:
    return Work(float(op.inputs[0].size))


def _scatter_combine(op: Op) -> Work:
    """One combine per update element."""
    return Work(float(op.inputs[2].size))


def _sort(op: Op) -> Work:
    n = op.inputs[0].size
    last = op.inputs[0].shape[-1] if op.inputs[0].shape else 1
    return Work(float(n * max(1, math.ceil(math.log2(max(last, 2))))))


def _fft(op: Op) -> Work:
    """5 n log2 n real operations per complex transform of length n."""
    n = math.prod(int(d) for d in op.params["fft_lengths"])
    transforms = max(op.inputs[0].size, op.outputs[0].size) / max(1, n)
    return Work(5.0 * n * math.log2(max(n, 2)) * transforms)


def _threefry(op: Op) -> Work:
    """20 rounds of add/rotate/xor on 2 words per output pair (~5 ops a round)."""
    return Work(_out_elems(op) * 100)


# ----- collective semantics on one device group ----------------------------------------------
# `vals` are the group members' operands in device order, `pos` this device's place in it; `xp`
# is numpy or jax.numpy (the interpreter and the staged run compute the same sums, in the same
# order).

def _all_reduce(vals: list[Any], pos: int, p: dict[str, Any], xp: Any) -> Any:
    combine = {"sum": xp.add, "max": xp.maximum, "min": xp.minimum}[p.get("op", "sum")]
    acc = vals[0]
    for v in vals[1:]:
        acc = combine(acc, v)
    return acc.astype(vals[0].dtype)


def _all_gather(vals: list[Any], pos: int, p: dict[str, Any], xp: Any) -> Any:
    return xp.concatenate(vals, axis=p["dim"])


def _reduce_scatter(vals: list[Any], pos: int, p: dict[str, Any], xp: Any) -> Any:
    return xp.split(_all_reduce(vals, pos, {"op": "sum"}, xp), len(vals), axis=p["dim"])[pos]


def _all_to_all(vals: list[Any], pos: int, p: dict[str, Any], xp: Any) -> Any:
    n = len(vals)
    return xp.concatenate([xp.split(v, n, axis=p["split_dim"])[pos] for v in vals], axis=p["concat_dim"])


def _shard_slice(vals: list[Any], pos: int, p: dict[str, Any], xp: Any) -> Any:
    """This device's block of a replicated value (no communication)."""
    return xp.split(vals[pos], len(vals), axis=p["dim"])[pos]


def _collective_permute(vals: list[Any], pos: int, p: dict[str, Any], xp: Any) -> Any:
    """(source, target) pairs, a ring by default; a device nobody sends to gets zeros."""
    n = len(vals)
    perm = p.get("perm") or tuple((i, (i + 1) % n) for i in range(n))
    source = next((s for s, t in perm if t == pos), None)
    return vals[source] if source is not None else xp.zeros_like(vals[pos])


# ----- the table ----------------------------------------------------------------------------

PRIMITIVES: dict[str, Primitive] = {}


def _define(names: str, category: Category, work: Callable[[Op], Work] | None, **fields: Any) -> None:
    for name in names.split():
        if name in PRIMITIVES:
            raise ValueError(f"primitive {name} defined twice")
        PRIMITIVES[name] = Primitive(name, category, work, **fields)


_VPU = dict(epilogue=True, reads_in_order=True, shard="elementwise")

# MXU
_define("dot_general", Category.MXU, _dot, shard="dot")
_define("conv_general_dilated", Category.MXU, _conv, shard="conv")
_define("ragged_dot_general", Category.MXU, _ragged_dot, doc="grouped matmul (MoE): one group's rows per weight")

# VPU, one result per element
_define("add sub mul div rem max min neg abs sign floor ceil round square select_n clamp and or not xor "
        "eq ne lt le gt ge eq_to lt_to le_to is_finite nextafter shift_left shift_right_logical "
        "shift_right_arithmetic real imag complex conj population_count clz add_any",
        Category.ELEMENTWISE, _per_element, **_VPU)
_define("integer_pow", Category.ELEMENTWISE, _integer_pow, **_VPU)
_define("convert_element_type", Category.ELEMENTWISE, _free, identity=Identity.SAME_TYPE, **_VPU)
_define("reduce_precision bitcast_convert_type", Category.ELEMENTWISE, _free, **_VPU)
_define("copy stop_gradient optimization_barrier", Category.ELEMENTWISE, _free, identity=Identity.ALWAYS, **_VPU)
_define("sharding_constraint reshard", Category.ELEMENTWISE, _free, identity=Identity.ALWAYS, epilogue=True,
        reads_in_order=True, shard="sharding_constraint", doc="a placement request: reshards, computes nothing")
_define("name", Category.ELEMENTWISE, _free, identity=Identity.ALWAYS, **_VPU,
        doc="checkpoint_name: tags a value for name-based remat policies")

# VPU / EUP transcendentals
_define("exp exp2 log log1p expm1 tanh rsqrt sqrt cbrt sin cos tan asin acos atan atan2 sinh cosh asinh "
        "acosh atanh erf erfc erf_inv pow lgamma digamma", Category.TRANSCENDENTAL, _transcendental, **_VPU)
_define("logistic", Category.TRANSCENDENTAL, _logistic, **_VPU)

# reductions over axes (cross-lane work when over the minor dim: sim/timing.py)
_define("reduce_sum reduce_max reduce_min argmax argmin", Category.REDUCE, _reduction, reads_in_order=True,
        shard="reduce")
_define("reduce_prod reduce_and reduce_or reduce_xor", Category.REDUCE, _reduction, reads_in_order=True)
_define("reduce", Category.REDUCE, _generic_reduce, reads_in_order=True, doc="lax.reduce with its own combiner")

# windowed and cumulative
_define("reduce_window_max reduce_window_min reduce_window_sum", Category.WINDOW, _window, shard="window")
_define("reduce_window", Category.WINDOW, _window, doc="reduce_window with its own combiner")
_define("select_and_gather_add select_and_scatter_add", Category.WINDOW, _select_in_window, shard="window")
_define("cumsum cumprod cummax cummin cumlogsumexp", Category.WINDOW, _cumulative)

# data movement
_define("broadcast_in_dim", Category.MOVEMENT, _free, epilogue=True, reads_in_order=True, shard="broadcast")
_define("reshape", Category.MOVEMENT, _free, identity=Identity.SAME_TYPE, epilogue=True, reads_in_order=True,
        shard="reshape")
_define("squeeze", Category.MOVEMENT, _free, identity=Identity.SAME_TYPE, epilogue=True, reads_in_order=True,
        shard="squeeze")
_define("slice", Category.MOVEMENT, _free, loop_indexing=True, shard="slice")
_define("pad", Category.MOVEMENT, _free, loop_indexing=True, shard="pad")
for _name in ("transpose", "concatenate", "stack", "unstack", "tile", "dynamic_slice"):
    _define(_name, Category.MOVEMENT, _free, shard=_name)
_define("dynamic_update_slice", Category.MOVEMENT, _free, in_place=True, shard="dynamic_update_slice")
_define("iota rev split", Category.MOVEMENT, _free)

# indexed access, sorting, FFT (strided, irregular access: a kernel of its own)
_define("gather", Category.GATHER, _free, shard="gather")
_define("scatter", Category.GATHER, _free, in_place=True)
_define("scatter-add", Category.GATHER, _scatter_combine, in_place=True, shard="scatter_add")
_define("scatter-mul scatter-min scatter-max", Category.GATHER, _scatter_combine, in_place=True)
_define("sort", Category.GATHER, _sort)
_define("top_k", Category.GATHER, _free)
_define("fft", Category.GATHER, _fft)

# counter-based RNG on the VPU
_define("threefry2x32", Category.RANDOM, _threefry)
_define("random_bits random_seed random_wrap random_unwrap random_fold_in random_split", Category.RANDOM, _free)

# control flow: bodies kept as nested graphs
_define("scan", Category.CONTROL, None, shard="scan")
_define("while cond", Category.CONTROL, None)
_define("shard_map", Category.CONTROL, None, shard="manual", doc="a per-device body (compiler/manual.py)")
_define("fusion", Category.CONTROL, None, doc="one kernel's fused ops as a nested graph (made by compiler/fusion.py)")

# tpusim's collectives, inserted by the SPMD pass (the first three are also JAX's names)
_define("all_reduce", Category.COLLECTIVE, _free, collective=_all_reduce)
_define("all_gather", Category.COLLECTIVE, _free, collective=_all_gather)
_define("reduce_scatter", Category.COLLECTIVE, _free, collective=_reduce_scatter)
_define("all_to_all", Category.COLLECTIVE, _free, collective=_all_to_all)
_define("collective_permute", Category.COLLECTIVE, _free, collective=_collective_permute)
_define("shard_slice", Category.COLLECTIVE, _free, collective=_shard_slice)
# JAX's named-axis collectives as written in shard_map bodies (compiler/manual.py rewrites them)
_define("psum psum_invariant pmax pmin ppermute pvary pbroadcast axis_index", Category.COLLECTIVE, _free,
        doc="named-axis: rewritten into tpusim's collectives by compiler/manual.py")

# jax.device_put to or from host memory (the front end names the direction)
_define("host_offload host_fetch device_put", Category.TRANSFER, _free, shard="elementwise")


def primitive(name: str) -> Primitive | None:
    """The entry for a primitive name, or None if tpusim does not compile it."""
    return PRIMITIVES.get(name)


def category_of(name: str) -> Category | None:
    entry = PRIMITIVES.get(name)
    return entry.category if entry is not None else None


def is_epilogue(name: str) -> bool:
    entry = PRIMITIVES.get(name)
    return entry is not None and entry.epilogue


def supported_primitives() -> list[str]:
    return sorted(PRIMITIVES)
