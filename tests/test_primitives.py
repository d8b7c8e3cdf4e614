"""The primitive table (ir/primitives.py) walked whole, as JAX's lax tests walk their op records:
every entry has a record here that makes JAX emit it (or, for tpusim's own ops, makes a pass
insert it); each record is compiled and run over its shapes and dtypes and checked against the
reference interpreter (or, on a mesh, against the same arithmetic in plain JAX). A primitive
added to the table without a record, or with a rule name no pass implements, fails here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax._src.lax import lax as lax_internal
from jax.ad_checkpoint import checkpoint_name
from jax.extend.random import threefry_2x32
from jax.sharding import AbstractMesh, NamedSharding
from jax.sharding import PartitionSpec as P

import tpusim
from tpusim.compiler.shard import SHARDING_RULES
from tpusim.ir.counts import op_counts
from tpusim.ir.opset import Category
from tpusim.ir.primitives import PRIMITIVES, Identity
from tpusim.reference import bf16_reference, relative_error

F32, BF16, I32, U32, C64 = np.float32, jnp.bfloat16, np.int32, np.uint32, np.complex64
MESH = AbstractMesh((4,), ("d",))
_ONE_DEVICE = NamedSharding(jax.make_mesh((1,), ("x",)), P())


@dataclass
class Record:
    """A function that makes JAX emit `prims`, and the argument shapes/dtypes to run it over."""

    fn: Callable[..., Any]
    shapes: list[tuple[int, ...]]
    dtypes: tuple[Any, ...] = (F32,)
    positive: bool = False  # arguments in (0.1, 0.9): logs, roots, inverse functions
    mesh: bool = False  # run on 4 simulated devices; `expect` is the plain-JAX arithmetic
    in_specs: tuple[Any, ...] = ()
    expect: Callable[..., Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _sm(body: Callable[..., Any], in_specs: Any, out_specs: Any, check_vma: bool = True) -> Callable[..., Any]:
    return jax.shard_map(body, mesh=MESH, in_specs=in_specs, out_specs=out_specs, check_vma=check_vma)


def _unary(f: Callable[..., Any], dtypes: tuple[Any, ...] = (F32, BF16), positive: bool = False) -> Record:
    return Record(f, [(4, 6)], dtypes, positive)


def _binary(f: Callable[..., Any], dtypes: tuple[Any, ...] = (F32, BF16)) -> Record:
    return Record(f, [(4, 6), (4, 6)], dtypes)


def _bitwise(f: Callable[..., Any], arity: int = 2) -> Record:
    return Record(f, [(4, 6)] * arity, (I32,))


def _tap(f: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """f, then an add: keeps an identity-like primitive in a graph that returns its result."""
    return lambda x: f(x) + 1


_DN = lax.GatherDimensionNumbers(offset_dims=(1,), collapsed_slice_dims=(0,), start_index_map=(0,))
_SDN = lax.ScatterDimensionNumbers(update_window_dims=(1,), inserted_window_dims=(0,),
                                   scatter_dims_to_operand_dims=(0,))
_IDX = np.array([[2], [0], [3]], np.int32)


def _scatter(f: Callable[..., Any]) -> Record:
    return Record(lambda x, u: f(x, _IDX, u, _SDN), [(4, 6), (3, 6)])


def _window(f: Callable[..., Any]) -> Record:
    return Record(f, [(2, 8, 8, 3)])


def _pool_grad(x: Any) -> Any:
    return jax.grad(lambda y: lax.reduce_window(y, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID").sum())(x)


def _random_key_ops(x: Any) -> Any:
    key = jax.random.key(0)
    k1, k2 = jax.random.split(jax.random.fold_in(key, 3))
    bits = jax.random.bits(k1, x.shape, jnp.uint32)
    data = jax.random.key_data(jax.random.wrap_key_data(jax.random.key_data(k2)))
    return x + (bits % 7).astype(x.dtype) + data.sum().astype(x.dtype)


def _generic_reduce(x: Any) -> Any:
    return lax.reduce(x, np.float32(0), lambda a, b: a + b * b, (1,))


def _scan(x: Any) -> Any:
    return lax.scan(lambda c, r: (c * 0.5 + r, jnp.tanh(c)), x[0], x)[1]


def _while(x: Any) -> Any:
    return lax.while_loop(lambda c: c.sum() < 100.0, lambda c: c * 1.5 + 1.0, jnp.abs(x))


def _cond(x: Any) -> Any:
    return lax.cond(x.sum() > 0, jnp.sin, jnp.cos, x)


def _host_round_trip(x: Any) -> Any:
    policy = jax.checkpoint_policies.save_and_offload_only_these_names(
        names_which_can_be_saved=[], names_which_can_be_offloaded=["h"],
        offload_src="device", offload_dst="pinned_host")

    def layer(y):
        return jnp.sin(checkpoint_name(jnp.tanh(y), "h")) * y

    return jax.grad(lambda y: jax.checkpoint(layer, policy=policy)(y).sum())(x)


def _blocks(x: Any, n: int = 4) -> Any:
    return x.reshape(n, x.shape[0] // n, *x.shape[1:])


RECORDS: dict[str, Record] = {
    # MXU
    "dot_general": Record(lambda a, b: a @ b, [(8, 16), (16, 24)], (F32, BF16)),
    "conv_general_dilated": Record(
        lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")),
        [(2, 6, 6, 4), (3, 3, 4, 8)], (F32, BF16)),
    "ragged_dot_general": Record(lambda x, w: lax.ragged_dot(x, w, jnp.array([3, 5], jnp.int32)),
                                 [(8, 16), (2, 16, 12)]),
    # elementwise
    "add": _binary(jnp.add), "sub": _binary(jnp.subtract), "mul": _binary(jnp.multiply),
    "div": _binary(lambda a, b: a / (jnp.abs(b) + 1)), "rem": _binary(lambda a, b: lax.rem(a, jnp.abs(b) + 1)),
    "max": _binary(lax.max), "min": _binary(lax.min), "neg": _unary(lax.neg), "abs": _unary(lax.abs),
    "sign": _unary(lax.sign), "floor": _unary(lax.floor), "ceil": _unary(lax.ceil), "round": _unary(lax.round),
    "integer_pow": _unary(lambda x: lax.integer_pow(x, 3)), "square": _unary(lax.square),
    "select_n": Record(lambda p, a, b: lax.select_n(p > 0, a, b), [(4, 6)] * 3),
    "clamp": _unary(lambda x: lax.clamp(np.float32(-0.5), x, np.float32(0.5)), (F32,)),
    "and": _bitwise(lax.bitwise_and), "or": _bitwise(lax.bitwise_or), "xor": _bitwise(lax.bitwise_xor),
    "not": _bitwise(lax.bitwise_not, 1), "population_count": _bitwise(lax.population_count, 1),
    "clz": _bitwise(lax.clz, 1), "shift_left": _bitwise(lambda a, b: lax.shift_left(a, b & 7)),
    "shift_right_logical": _bitwise(lambda a, b: lax.shift_right_logical(a, b & 7)),
    "shift_right_arithmetic": _bitwise(lambda a, b: lax.shift_right_arithmetic(a, b & 7)),
    "eq": _binary(lambda a, b: lax.eq(a, b).astype(F32)), "ne": _binary(lambda a, b: lax.ne(a, b).astype(F32)),
    "lt": _binary(lambda a, b: lax.lt(a, b).astype(F32)), "le": _binary(lambda a, b: lax.le(a, b).astype(F32)),
    "gt": _binary(lambda a, b: lax.gt(a, b).astype(F32)), "ge": _binary(lambda a, b: lax.ge(a, b).astype(F32)),
    # total-order comparisons (searchsorted emits le_to; bound directly here)
    **{f"{c}_to": _binary(lambda a, b, c=c: getattr(lax_internal, f"{c}_to_p").bind(a, b).astype(F32))
       for c in ("eq", "lt", "le")},
    "is_finite": _unary(lambda x: jnp.isfinite(x).astype(F32)),
    "nextafter": _binary(lambda a, b: lax.nextafter(a, b), (F32,)),
    "convert_element_type": _unary(lambda x: x.astype(I32) + 1, (F32, BF16)),
    "copy": _unary(_tap(jnp.copy)), "stop_gradient": _unary(_tap(lax.stop_gradient)),
    "optimization_barrier": _unary(_tap(lax.optimization_barrier)),
    "reduce_precision": _unary(lambda x: lax.reduce_precision(x, 5, 10), (F32,)),
    "bitcast_convert_type": _unary(lambda x: lax.bitcast_convert_type(x, U32) >> 3, (F32,)),
    "real": Record(lambda x: jnp.real(x * 1j + x), [(4, 6)]), "imag": Record(lambda x: jnp.imag(x * 1j + x), [(4, 6)]),
    "complex": Record(lambda a, b: jnp.abs(lax.complex(a, b)), [(4, 6), (4, 6)]),
    "conj": Record(lambda a: jnp.real(jnp.conj(a * 1j + 2) * a), [(4, 6)]),
    "add_any": Record(jax.grad(lambda x: (jnp.sin(x) * jnp.cos(x)).sum()), [(4, 6)]),
    "sharding_constraint": _unary(_tap(lambda x: lax.with_sharding_constraint(x, _ONE_DEVICE))),
    "reshard": _unary(_tap(lambda x: jax.sharding.reshard(x, _ONE_DEVICE))),
    "name": _unary(_tap(lambda x: checkpoint_name(x, "h"))),
    # transcendental
    **{p: _unary(f) for p, f in {
        "exp": lax.exp, "exp2": lax.exp2, "expm1": lax.expm1, "tanh": lax.tanh, "logistic": lax.logistic,
        "sin": lax.sin, "cos": lax.cos, "tan": lax.tan, "atan": lax.atan, "sinh": lax.sinh, "cosh": lax.cosh,
        "asinh": lax.asinh, "erf": lax.erf, "erfc": lax.erfc, "cbrt": lax.cbrt}.items()},
    **{p: _unary(f, positive=True) for p, f in {
        "log": lax.log, "log1p": lax.log1p, "rsqrt": lax.rsqrt, "sqrt": lax.sqrt, "asin": lax.asin, "acos": lax.acos,
        "atanh": lax.atanh, "erf_inv": lax.erf_inv, "lgamma": lax.lgamma, "digamma": lax.digamma}.items()},
    "acosh": _unary(lambda x: lax.acosh(x + 1), positive=True),
    "atan2": _binary(lax.atan2), "pow": Record(lambda a, b: lax.pow(a, b), [(4, 6), (4, 6)], positive=True),
    # reductions
    **{f"reduce_{k}": Record(lambda x, k=k: getattr(jnp, k)(x, axis=1), [(4, 6)]) for k in ("sum", "max", "min")},
    "reduce_prod": Record(lambda x: jnp.prod(x, axis=0), [(4, 6)]),
    "reduce_and": _bitwise(lambda x: jnp.all(x > 0, axis=1).astype(I32), 1),
    "reduce_or": _bitwise(lambda x: jnp.any(x > 0, axis=1).astype(I32), 1),
    "reduce_xor": _bitwise(lambda x: lax.reduce_xor_p.bind(x, axes=(1,)), 1),
    "argmax": Record(lambda x: jnp.argmax(x, axis=1), [(4, 6)]),
    "argmin": Record(lambda x: jnp.argmin(x, axis=0), [(4, 6)]),
    "reduce": Record(_generic_reduce, [(4, 6)]),
    # windows and cumulative
    "reduce_window_max": _window(lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")),
    "reduce_window_min": _window(lambda x: lax.reduce_window(x, jnp.inf, lax.min, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")),
    "reduce_window_sum": _window(lambda x: lax.reduce_window(x, 0.0, lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")),
    "reduce_window": _window(lambda x: lax.reduce_window(x, 1.0, lambda a, b: a * b + 0.1, (1, 2, 2, 1), (1, 2, 2, 1),
                                                         "VALID")),
    "select_and_scatter_add": _window(_pool_grad),
    "select_and_gather_add": _window(lambda x: jax.jvp(
        lambda y: lax.reduce_window(y, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"), (x,), (x * 2,))[1]),
    "cumsum": Record(lambda x: jnp.cumsum(x, axis=1), [(4, 6)]),
    "cumprod": Record(lambda x: jnp.cumprod(x, axis=0), [(4, 6)]),
    "cummax": Record(lambda x: lax.cummax(x, axis=1), [(4, 6)]),
    "cummin": Record(lambda x: lax.cummin(x, axis=1), [(4, 6)]),
    "cumlogsumexp": Record(lambda x: lax.cumlogsumexp(x, axis=1), [(4, 6)]),
    # data movement
    "broadcast_in_dim": _unary(lambda x: jnp.broadcast_to(x[:, None, :], (4, 3, 6)) * 2),
    "reshape": _unary(lambda x: x.reshape(6, 4) * 2), "squeeze": Record(lambda x: x[:, 0] * 2, [(4, 1)]),
    "transpose": _unary(lambda x: x.T * 2), "slice": _unary(lambda x: x[1:3, ::2] * 2),
    "concatenate": _binary(lambda a, b: jnp.concatenate([a, b], axis=1)),
    "pad": _unary(lambda x: lax.pad(x, jnp.zeros((), x.dtype), ((1, 2, 0), (0, 1, 1)))),
    "rev": _unary(lambda x: lax.rev(x, (1,)) * 2), "iota": _unary(lambda x: x + jnp.arange(6, dtype=x.dtype)),
    "split": _unary(lambda x: jnp.split(x, 2, axis=1)[1] * 2),
    "dynamic_slice": Record(lambda x, i: lax.dynamic_slice(x, (i[0] % 2, 1), (2, 3)), [(4, 6), (1,)], (F32, I32)),
    "dynamic_update_slice": Record(lambda x, u: lax.dynamic_update_slice(x, u, (1, 2)), [(4, 6), (2, 3)]),
    "stack": _binary(lambda a, b: jnp.stack([a, b]) * 2), "tile": _unary(lambda x: jnp.tile(x, (2, 1)) * 2),
    "unstack": Record(jax.grad(lambda a, b: (jnp.stack([a, b]) ** 2).sum()), [(4, 6), (4, 6)]),
    # indexed access, sorting, FFT
    "gather": Record(lambda x: lax.gather(x, _IDX, _DN, (1, 6)), [(4, 6)]),
    "scatter": _scatter(lax.scatter), "scatter-add": _scatter(lax.scatter_add),
    "scatter-mul": _scatter(lax.scatter_mul), "scatter-min": _scatter(lax.scatter_min),
    "scatter-max": _scatter(lax.scatter_max),
    "sort": Record(lambda x: jnp.sort(x, axis=1), [(4, 6)]),
    "top_k": Record(lambda x: lax.top_k(x, 3)[0], [(4, 6)]),
    "fft": Record(lambda x: jnp.abs(jnp.fft.rfft(x, axis=-1)), [(4, 8)]),
    # random
    "threefry2x32": Record(lambda x: jnp.stack(threefry_2x32((np.uint32(7), np.uint32(9)), x)), [(4, 6)], (U32,)),
    **{p: Record(_random_key_ops, [(4, 6)]) for p in ("random_bits", "random_seed", "random_wrap",
                                                       "random_unwrap", "random_fold_in", "random_split")},
    # control flow (and tpusim's fused kernels)
    "scan": Record(_scan, [(5, 3)]), "while": Record(_while, [(4, 6)]), "cond": Record(_cond, [(4, 6)]),
    "fusion": _unary(lambda x: jnp.exp(x) * 2 + 1),
    # on 4 simulated devices: shard_map bodies, their named-axis collectives and what tpusim makes of them
    "shard_map": Record(_sm(lambda b: b * 2, (P("d"),), P("d")), [(8, 3)], mesh=True, expect=lambda x: x * 2),
    "psum_invariant": Record(_sm(lambda b: lax.psum(b, "d"), (P("d"),), P()), [(8, 3)], mesh=True,
                             expect=lambda x: _blocks(x).sum(0)),
    "pmax": Record(_sm(lambda b: lax.pmax(b, "d"), (P("d"),), P()), [(8, 3)], mesh=True,
                   expect=lambda x: _blocks(x).max(0)),
    "pmin": Record(_sm(lambda b: lax.pmin(b, "d"), (P("d"),), P()), [(8, 3)], mesh=True,
                   expect=lambda x: _blocks(x).min(0)),
    "pvary": Record(_sm(lambda b, w: b * w, (P("d"), P()), P("d")), [(8, 3), (3,)], mesh=True,
                    expect=lambda x, w: x * w),
    "psum": Record(_sm(lambda b: lax.psum(b, "d"), (P("d"),), P(), check_vma=False), [(8, 3)], mesh=True,
                   expect=lambda x: _blocks(x).sum(0)),
    "ppermute": Record(_sm(lambda b: lax.ppermute(b, "d", [(i, (i + 1) % 4) for i in range(4)]), (P("d"),), P("d")),
                       [(8, 3)], mesh=True, expect=lambda x: jnp.roll(_blocks(x), 1, axis=0).reshape(x.shape)),
    "axis_index": Record(_sm(lambda b: b + lax.axis_index("d").astype(b.dtype), (P("d"),), P("d")), [(8, 3)],
                         mesh=True, expect=lambda x: x + jnp.repeat(jnp.arange(4.0), 2)[:, None]),
    "all_gather": Record(_sm(lambda b: lax.all_gather(b, "d", tiled=True), (P("d"),), P(), check_vma=False), [(8, 3)],
                         mesh=True,
                         expect=lambda x: x),
    "reduce_scatter": Record(_sm(lambda b: lax.psum_scatter(b, "d", tiled=True), (P("d"),), P("d")), [(16, 3)],
                             mesh=True, expect=lambda x: _blocks(x).sum(0)),
    "all_to_all": Record(_sm(lambda b: lax.all_to_all(b, "d", 1, 0, tiled=True), (P("d"),), P(None, "d")),
                         [(8, 8)], mesh=True, expect=lambda x: x),
    "all_reduce": Record(lambda a, b: a @ b, [(4, 8), (8, 6)], mesh=True, in_specs=(P(None, "d"), P("d")),
                         expect=lambda a, b: a @ b),
    "shard_slice": Record(lambda a, b: a * b, [(8, 6), (8, 6)], mesh=True, in_specs=(P("d"), None),
                          expect=lambda a, b: a * b),
    "collective_permute": Record(_sm(lambda b: lax.ppermute(b, "d", [(0, 1)]), (P("d"),), P("d")), [(8, 3)],
                                 mesh=True, expect=lambda x: jnp.concatenate([0 * x[:2], x[:2], 0 * x[4:]])),
    # host memory (activation offloading)
    "host_offload": Record(_host_round_trip, [(4, 6)]), "host_fetch": Record(_host_round_trip, [(4, 6)]),
    "device_put": _unary(_tap(lambda x: jax.device_put(x, jax.devices()[0]))),
}
# tpusim's own ops, inserted by its passes (or the front end): found in the compiled program
MADE_BY_TPUSIM = {"all_reduce", "shard_slice", "collective_permute", "host_offload", "host_fetch", "fusion"}
# named-axis collectives JAX 0.10 no longer emits (kept for programs traced by other releases)
LEGACY = {"pbroadcast"}


def _args(record: Record, dtype: Any, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i, shape in enumerate(record.shapes):
        dt = I32 if (dtype is I32 or (i > 0 and record.dtypes == (F32, I32))) else dtype
        if np.dtype(dt).kind in "iu":
            out.append(rng.integers(-20, 20, size=shape).astype(dt))
        elif record.positive:
            out.append(rng.uniform(0.1, 0.9, size=shape).astype(dt))
        else:
            out.append(rng.normal(size=shape).astype(dt))
    return out


def _jaxpr_prims(jaxpr: Any, found: set[str]) -> set[str]:
    """The primitives JAX emits, nested jaxprs (jit, shard_map, loop bodies) included."""
    for eqn in jaxpr.eqns:
        found.add(eqn.primitive.name)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    _jaxpr_prims(inner, found)
    return found


def _prims_of(graph: Any, found: set[str]) -> set[str]:
    for op in graph.ops:
        found.add(op.prim)
        for g in op.subgraphs.values():
            _prims_of(g, found)
    return found


def _compiled_prims(compiled: Any) -> set[str]:
    found: set[str] = set()
    for k in compiled.program.all_kernels():
        if k.op is not None:
            found.add(k.op.prim)
            for g in k.op.subgraphs.values():
                _prims_of(g, found)
    return found


def _cases() -> list[Any]:
    cases = []
    for name, record in RECORDS.items():
        dtypes = (F32,) if record.mesh or record.dtypes == (F32, I32) else record.dtypes
        cases += [pytest.param(name, dt, id=f"{name}-{np.dtype(dt).name}") for dt in dtypes]
    return cases


def test_every_primitive_has_a_record_and_every_rule_is_implemented():
    assert set(PRIMITIVES) - set(RECORDS) == LEGACY
    assert not set(RECORDS) - set(PRIMITIVES)
    shard_rules = {p.shard for p in PRIMITIVES.values()} - {"replicate", "manual"}
    assert shard_rules == set(SHARDING_RULES), "a shard rule name without its rule, or a rule no entry names"
    for p in PRIMITIVES.values():
        assert (p.work is None) == (p.category is Category.CONTROL), p.name
        assert (p.collective is not None) <= (p.category is Category.COLLECTIVE), p.name
        if p.epilogue:  # an epilogue runs on the accumulator tile: per element, in the same order
            assert p.reads_in_order and p.category in (Category.ELEMENTWISE, Category.TRANSCENDENTAL,
                                                       Category.MOVEMENT), p.name
        assert p.identity is Identity.NEVER or p.rules()["work"] == "free", p.name


@pytest.mark.parametrize("name,dtype", _cases())
def test_primitive_compiles_counts_and_matches_the_reference(name, dtype):
    record = RECORDS[name]
    args = _args(record, dtype)
    if record.mesh:
        compiled = tpusim.compile(record.fn, *args, device="v5e-4", mesh={"d": 4},
                                  in_specs=record.in_specs or None, precision="highest")
        want = np.asarray(record.expect(*args))
    else:
        compiled = tpusim.compile(record.fn, *args, device="v5e")
        want = bf16_reference(record.fn, *args)
    lowered = tpusim.jit(record.fn).trace(*args).lower()
    emitted = _jaxpr_prims(jax.make_jaxpr(record.fn)(*args).jaxpr, set()) | _compiled_prims(compiled)
    assert name in emitted, f"the record never emits {name}"
    for op in lowered.graph.ops:  # every op's work rule runs and counts something sensible
        c = op_counts(op)
        assert c.flops >= 0 and c.transcendentals >= 0 and c.bytes > 0
    got = compiled.run(*args)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
        assert g.shape == w.shape
        if record.mesh or np.dtype(dtype) == BF16:
            assert relative_error(g, w) < (1e-5 if record.mesh else 1e-2)
        else:
            np.testing.assert_allclose(g, w, rtol=2e-6, atol=1e-6)
