"""Staged numerics: a whole Program as one JAX function, compiled by XLA once and cached.

The kernel-by-kernel interpreter (sim/numerics.py) dispatches every kernel from Python; this
module builds the same computation as one traced function instead, so a run is one call:
- VPU work (fused elementwise/reduction kernels, prologues, epilogues, pooling, gathers, RNG)
  binds the same JAX primitives the interpreter binds, now inside one `jax.jit`;
- the MXU arithmetic (bf16-rounded operands, exact products, f32 accumulation, multi-pass
  splits; int8 on v1 through the interpreter's own code) is sim/mxu_jax.py, which the
  interpreter also uses outside strict mode, so a staged run and an interpreted one agree
  bit for bit;
- scan / while / cond become `lax.scan` / `lax.while_loop` / `lax.switch` over staged bodies.
A sharded program runs the same way on every simulated device at once (`stage_spmd`: a leading
device axis, compute kernels vmapped over it, collectives combining its entries in device
order, as sim/spmd.py does). `strict=True` (every MXU grid step walked separately in NumPy)
keeps the interpreter.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from tpusim.ir.graph import Op, Value
from tpusim.ir.primitives import PRIMITIVES
from tpusim.program.program import Kernel, Program
from tpusim.sim.mxu_jax import mxu_product
from tpusim.sim.numerics import _bind, _read, _to_numpy

Env = dict[int, Any]


def stage_program(program: Program) -> Callable[..., list[Any]]:
    """One jit-compiled function from the program's inputs to its outputs."""
    return jax.jit(program_function(program))


def program_function(program: Program) -> Callable[..., list[Any]]:
    def run(*args: Any) -> list[Any]:
        env: Env = {v.id: a for v, a in zip(program.inputs, args)}
        for kernel in program.kernels:
            _kernel(kernel, env)
        return [_read(env, v) for v in program.outputs]

    return run


def run_staged(program: Program, args: list[Any], cache: dict[str, Any]) -> list[Any]:
    """Execute `program` through its staged function (built on first use, kept in `cache`)."""
    if "staged" not in cache:
        cache["staged"] = stage_program(program)
    return [_to_numpy(o) for o in cache["staged"](*args)]


def _ops(ops: list[Op], env: Env) -> None:
    for op in ops:
        for o, r in zip(op.outputs, _bind(op, [_read(env, v) for v in op.inputs])):
            env[o.id] = r


def _kernel(kernel: Kernel, env: Env) -> None:
    if kernel.kind in ("matmul", "conv"):
        _mxu(kernel, env)
    elif kernel.kind == "scan":
        _scan(kernel, env)
    elif kernel.kind == "while":
        _while(kernel, env)
    elif kernel.kind == "cond":
        _cond(kernel, env)
    elif kernel.kind == "transfer":  # to or from host memory: the bits do not change
        env[kernel.outputs[0].id] = _read(env, kernel.inputs[0])
    else:
        _ops(kernel.fused.ops if kernel.fused is not None else [kernel.op], env)


def _mxu(kernel: Kernel, env: Env) -> None:
    """Prologue, MXU product (sim/mxu_jax.py) and epilogue."""
    fused = kernel.fused
    assert fused is not None and kernel.mxu is not None
    anchor = kernel.anchor
    assert anchor is not None
    pos = fused.ops.index(anchor)
    local: Env = {v.id: _read(env, v) for v in kernel.inputs}
    _ops(fused.ops[:pos], local)
    operands = [_read(local, v) for v in anchor.inputs]
    local[anchor.outputs[0].id] = mxu_product(anchor, kernel.mxu, *operands)
    _ops(fused.ops[pos + 1:], local)
    for v in kernel.outputs:
        env[v.id] = local[v.id]


def _scan(kernel: Kernel, env: Env) -> None:
    op = kernel.op
    p = op.params
    n_consts, n_carry, length = int(p["num_consts"]), int(p["num_carry"]), int(p["length"])
    args = [_read(env, v) for v in op.inputs]
    consts, carry, xs = args[:n_consts], args[n_consts:n_consts + n_carry], args[n_consts + n_carry:]
    body = program_function(kernel.bodies["body"])

    def step(c: list[Any], x: list[Any]) -> tuple[list[Any], list[Any]]:
        outs = body(*consts, *c, *x)
        return list(outs[:n_carry]), list(outs[n_carry:])

    carry, ys = jax.lax.scan(step, list(carry), list(xs), length=length, reverse=bool(p.get("reverse")))
    for v, r in zip(op.outputs, [*carry, *ys]):
        env[v.id] = r


def _while(kernel: Kernel, env: Env) -> None:
    op = kernel.op
    nc, nb = int(op.params["cond_nconsts"]), int(op.params["body_nconsts"])
    args = [_read(env, v) for v in op.inputs]
    cconsts, bconsts, carry = args[:nc], args[nc:nc + nb], args[nc + nb:]
    cond = program_function(kernel.bodies["cond"])
    body = program_function(kernel.bodies["body"])
    out = jax.lax.while_loop(lambda c: cond(*cconsts, *c)[0], lambda c: list(body(*bconsts, *c)), list(carry))
    for v, r in zip(op.outputs, out):
        env[v.id] = r


def _cond(kernel: Kernel, env: Env) -> None:
    args = [_read(env, v) for v in kernel.op.inputs]
    n = len(kernel.bodies)
    branches = [program_function(kernel.bodies[f"branch{i}"]) for i in range(n)]
    index = jnp.clip(jnp.asarray(args[0]).astype(jnp.int32), 0, n - 1)
    outs = jax.lax.switch(index, [lambda *a, b=b: list(b(*a)) for b in branches], *args[1:])
    for v, r in zip(kernel.op.outputs, outs):
        env[v.id] = r



# ---- several simulated devices in lockstep --------------------------------------------------
def stage_spmd(program: Program, mesh_axes: dict[str, int]) -> Callable[..., list[Any]]:
    """One jit-compiled function running the per-device `program` on every device of the mesh
    at once: each argument and result carries a leading device axis; compute kernels are
    vmapped over it, collectives combine its entries as sim/spmd.py does."""
    return jax.jit(_spmd_function(program, mesh_axes))


def _spmd_function(program: Program, mesh_axes: dict[str, int]) -> Callable[..., list[Any]]:
    from tpusim.sim.spmd import _has_collectives

    n = math.prod(mesh_axes.values())

    def run(*stacked: Any) -> list[Any]:
        env: Env = {v.id: a for v, a in zip(program.inputs, stacked)}
        for kernel in program.kernels:
            if kernel.kind == "collective":
                _collective(kernel, env, mesh_axes)
            elif kernel.kind == "scan" and _has_collectives(kernel.bodies["body"]):
                _scan_lockstep(kernel, env, mesh_axes, n)
            else:
                _vmapped(kernel, env, n)
        return [_stacked(env, v, n) for v in program.outputs]

    return run


def _stacked(env: Env, v: Value, n: int) -> Any:
    """`v` on every device: its per-device values, or a constant repeated."""
    if v.id in env:
        return env[v.id]
    return jnp.broadcast_to(jnp.asarray(_read(env, v)), (n, *v.shape))


def _vmapped(kernel: Kernel, env: Env, n: int) -> None:
    batched = [v for v in kernel.op.inputs if v.id in env]
    batched = list({v.id: v for v in batched}.values())

    def one_device(*arrays: Any) -> list[Any]:
        local: Env = {v.id: a for v, a in zip(batched, arrays)}
        _kernel(kernel, local)
        return [local[v.id] for v in kernel.outputs]

    # (a kernel of constants alone, an iota or a broadcast scalar, is the same on every device)
    results = jax.vmap(one_device, axis_size=n)(*[env[v.id] for v in batched])
    for v, r in zip(kernel.outputs, results):
        env[v.id] = r


def _collective(kernel: Kernel, env: Env, mesh_axes: dict[str, int]) -> None:
    """sim/spmd._collective on stacked values (the same entry's semantics, in the same device order)."""
    from tpusim.sim.spmd import _groups

    op = kernel.op
    semantics = PRIMITIVES[op.prim].collective
    src, dst = op.inputs[0], op.outputs[0]
    stacked = _stacked(env, src, math.prod(mesh_axes.values()))
    per_device: list[Any] = [None] * stacked.shape[0]
    for members in _groups(tuple(op.params["axes"]), mesh_axes).values():
        vals = [stacked[d] for d in members]
        for pos, d in enumerate(members):
            per_device[d] = semantics(vals, pos, op.params, jnp)
    env[dst.id] = jnp.stack(per_device)


def _scan_lockstep(kernel: Kernel, env: Env, mesh_axes: dict[str, int], n: int) -> None:
    """A scan whose body talks to other devices: each iteration runs on every device at once."""
    op = kernel.op
    p = op.params
    nc, nk, length = int(p["num_consts"]), int(p["num_carry"]), int(p["length"])
    args = [_stacked(env, v, n) for v in op.inputs]
    consts, carry, xs = args[:nc], args[nc:nc + nk], args[nc + nk:]
    body = _spmd_function(kernel.bodies["body"], mesh_axes)

    def step(c: list[Any], x: list[Any]) -> tuple[list[Any], list[Any]]:
        outs = body(*consts, *c, *x)
        return list(outs[:nk]), list(outs[nk:])

    carry, ys = jax.lax.scan(step, list(carry), [jnp.swapaxes(x, 0, 1) for x in xs], length=length,
                             reverse=bool(p.get("reverse")))
    for v, r in zip(op.outputs, [*carry, *[jnp.swapaxes(y, 0, 1) for y in ys]]):
        env[v.id] = r
