"""Numerics interpreter: execute a Program kernel by kernel and return real outputs.

- matmul/conv kernels: the MXU's arithmetic (bf16-rounded operands, exact products, f32
  accumulation, multi-pass splits, int8 on v1) as staged XLA operations (sim/mxu_jax.py), the
  same as a staged run (sim/staged.py); with `strict`, tpusim's own NumPy walk of the plan's
  grid steps and K blocks (sim/mxu.py), which differs only in the order of f32 additions.
  Depthwise convolutions, which the plan puts on the VPU, are f32 multiply-adds of operands
  at the op's precision. The fused prologue/epilogue runs on the VPU path.
- VPU work (fused elementwise/reduction kernels, epilogues, pooling, gathers, RNG): the f32 math
  of each primitive is evaluated with JAX's own CPU implementation of that primitive, one
  jit-compiled function per kernel (cached on the kernel), so the arithmetic of a fused kernel
  is exactly the composition of its ops.
- scan / while / cond: the body programs run iteration by iteration, as the TPU does.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

from tpusim.ir.geometry import conv_geometry, dot_geometry
from tpusim.ir.graph import Op, Value
from tpusim.program.program import Kernel, MxuPlan, Program
from tpusim.sim.mxu import conv_taps, matmul_blocks, to_bf16_f32
from tpusim.sim.mxu_jax import mxu_product

Env = dict[int, Any]


def _read(env: Env, v: Value) -> Any:
    if v.id in env:
        return env[v.id]
    if v.const is not None:
        return v.const
    raise KeyError(f"value {v} is not available (compiler bug: kernel order)")


def _bind(op: Op, args: list[Any]) -> list[Any]:
    res = op.jax_prim.bind(*args, **op.params)
    return list(res) if op.jax_prim.multiple_results else [res]


def ops_function(ops: list[Op], inputs: list[Value], outputs: list[Value]) -> Callable[..., list[Any]]:
    """A jit-compiled function evaluating `ops` (VPU work) from `inputs` to `outputs`."""

    def run(*arrays: Any) -> list[Any]:
        env: Env = {v.id: a for v, a in zip(inputs, arrays)}
        for op in ops:
            for o, r in zip(op.outputs, _bind(op, [_read(env, v) for v in op.inputs])):
                env[o.id] = r
        return [_read(env, v) for v in outputs]

    return jax.jit(run)


def dot_product(op: Op, plan: MxuPlan, lhs: np.ndarray, rhs: np.ndarray, strict: bool) -> np.ndarray:
    """A dot_general in the MXU's arithmetic, K walked in the plan's blocks (sim/mxu.py)."""
    g = dot_geometry(op)
    a = np.transpose(lhs, (*g.lhs_batch, *g.lhs_free, *g.lhs_contract)).reshape(g.B, g.M, g.K)
    b = np.transpose(rhs, (*g.rhs_batch, *g.rhs_contract, *g.rhs_free)).reshape(g.B, g.K, g.N)
    acc = matmul_blocks(a, b, plan, strict)
    return acc.reshape(op.outputs[0].shape)


def _vpu_conv(op: Op, plan: MxuPlan, lhs: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """A depthwise convolution (or its gradient; on the VPU, or on the MXU with its groups
    packed): f32 multiply-adds, accumulated in f32, of the operands at the op's precision
    (rounded to bf16 at default precision, as the MXU path rounds them; exact at
    "high"/"highest"); JAX's CPU convolution at HIGHEST precision is that arithmetic."""
    p = op.params
    a, b = (to_bf16_f32(v) if plan.precision == "bf16" else np.asarray(v, np.float32) for v in (lhs, rhs))
    out = jax.lax.conv_general_dilated(
        a, b, p["window_strides"], p["padding"], p["lhs_dilation"], p["rhs_dilation"], p["dimension_numbers"],
        p["feature_group_count"], p["batch_group_count"], precision=jax.lax.Precision.HIGHEST,
        preferred_element_type=np.float32)
    return np.asarray(out)


def _prologue(kernel: Kernel, env: Env) -> tuple[Op, list[Op], Env]:
    """(anchor, epilogue ops, values inside the kernel): the kernel's inputs and what its fused
    prologue makes of them, which the matmul and the epilogue read."""
    fused = kernel.fused
    anchor = kernel.anchor
    assert anchor is not None
    pos = fused.ops.index(anchor)  # type: ignore[union-attr]
    pre, post = fused.ops[:pos], fused.ops[pos + 1:]  # type: ignore[union-attr]
    local: Env = {v.id: _read(env, v) for v in kernel.inputs}
    if pre:
        # what the matmul and the epilogue read of the prologue's values, and what leaves the kernel
        later = {v.id for op in [anchor, *post] for v in op.inputs} | {v.id for v in kernel.outputs}
        need = [o for op in pre for o in op.outputs if o.id in later]
        if "pre" not in kernel.cache:
            kernel.cache["pre"] = ops_function(pre, kernel.inputs, need)
        local.update({v.id: r for v, r in zip(need, kernel.cache["pre"](*[local[v.id] for v in kernel.inputs]))})
    return anchor, post, local


def mxu_operands(kernel: Kernel, env: Env) -> list[Any]:
    """The values a matmul/conv kernel's MXU op multiplies (after its fused prologue)."""
    anchor, _, local = _prologue(kernel, env)
    return [_read(local, v) for v in anchor.inputs]


def _mxu_kernel(kernel: Kernel, env: Env, strict: bool) -> None:
    anchor, post, local = _prologue(kernel, env)
    out_v = anchor.outputs[0]
    plan = kernel.mxu
    assert plan is not None
    if not strict or anchor.prim == "ragged_dot_general":
        # the staged arithmetic (sim/mxu_jax.py), one jit-compiled product per kernel (a ragged
        # dot has no NumPy block walk: strict mode uses it too)
        if "mxu" not in kernel.cache:
            kernel.cache["mxu"] = jax.jit(lambda *operands: mxu_product(anchor, plan, *operands))
        local[out_v.id] = kernel.cache["mxu"](*[_read(local, v) for v in anchor.inputs])
    else:
        lhs, rhs = (np.asarray(_read(local, v)) for v in anchor.inputs[:2])
        if anchor.prim == "dot_general":
            acc = dot_product(anchor, plan, lhs, rhs, strict)
        elif plan.engine == "vpu" or int(anchor.params["batch_group_count"]) > 1:
            acc = _vpu_conv(anchor, plan, lhs, rhs)
        else:
            acc = conv_taps(lhs, rhs, conv_geometry(anchor), plan)
        local[out_v.id] = acc.astype(out_v.dtype)
    if post:
        made_in_post = {o.id for op in post for o in op.outputs}
        post_in, seen = [], set()
        for op in post:
            for v in op.inputs:
                if v.id in local and v.id not in made_in_post and v.id not in seen:
                    seen.add(v.id)
                    post_in.append(v)
        # the epilogue makes what leaves the kernel, except values the prologue already made
        made = [v for v in kernel.outputs if v.id in made_in_post or v.id not in local]
        if "post" not in kernel.cache:
            kernel.cache["post"] = ops_function(post, post_in, made)
        results = kernel.cache["post"](*[local[v.id] for v in post_in])
        local.update({v.id: r for v, r in zip(made, results)})
    for v in kernel.outputs:
        env[v.id] = local[v.id]


def _ops_kernel(kernel: Kernel, ops: list[Op], env: Env) -> None:
    if "fn" not in kernel.cache:
        kernel.cache["fn"] = ops_function(ops, kernel.inputs, kernel.outputs)
    results = kernel.cache["fn"](*[_read(env, v) for v in kernel.inputs])
    for v, r in zip(kernel.outputs, results):
        env[v.id] = r


def _scan(kernel: Kernel, env: Env, strict: bool) -> None:
    op = kernel.op
    p = op.params
    n_consts, n_carry, length = int(p["num_consts"]), int(p["num_carry"]), int(p["length"])
    args = [_read(env, v) for v in op.inputs]
    consts, carry, xs = args[:n_consts], args[n_consts:n_consts + n_carry], args[n_consts + n_carry:]
    body = kernel.bodies["body"]
    ys_steps: list[list[Any]] = []
    order = range(length - 1, -1, -1) if p.get("reverse") else range(length)
    for i in order:
        outs = run_program(body, [*consts, *carry, *[x[i] for x in xs]], strict, as_numpy=False)
        carry, ys = outs[:n_carry], outs[n_carry:]
        ys_steps.append(ys)
    if p.get("reverse"):
        ys_steps.reverse()
    n_ys = len(op.outputs) - n_carry
    stacked = []
    for j in range(n_ys):
        v = op.outputs[n_carry + j]
        stacked.append(np.stack([np.asarray(s[j]) for s in ys_steps]) if ys_steps else np.zeros(v.shape, v.dtype))
    for v, r in zip(op.outputs, [*carry, *stacked]):
        env[v.id] = r


def _while(kernel: Kernel, env: Env, strict: bool) -> None:
    op = kernel.op
    nc, nb = int(op.params["cond_nconsts"]), int(op.params["body_nconsts"])
    args = [_read(env, v) for v in op.inputs]
    cconsts, bconsts, carry = args[:nc], args[nc:nc + nb], args[nc + nb:]
    while bool(np.asarray(run_program(kernel.bodies["cond"], [*cconsts, *carry], strict, as_numpy=False)[0])):
        carry = run_program(kernel.bodies["body"], [*bconsts, *carry], strict, as_numpy=False)
    for v, r in zip(op.outputs, carry):
        env[v.id] = r


def _cond(kernel: Kernel, env: Env, strict: bool) -> None:
    args = [_read(env, v) for v in kernel.op.inputs]
    n = len(kernel.bodies)
    index = int(np.clip(int(np.asarray(args[0])), 0, n - 1))
    outs = run_program(kernel.bodies[f"branch{index}"], args[1:], strict, as_numpy=False)
    for v, r in zip(kernel.op.outputs, outs):
        env[v.id] = r


def run_kernel(kernel: Kernel, env: Env, strict: bool = False) -> None:
    if kernel.kind in ("matmul", "conv"):
        _mxu_kernel(kernel, env, strict)
    elif kernel.kind == "scan":
        _scan(kernel, env, strict)
    elif kernel.kind == "while":
        _while(kernel, env, strict)
    elif kernel.kind == "cond":
        _cond(kernel, env, strict)
    elif kernel.kind == "transfer":  # to or from host memory: the bits do not change
        env[kernel.outputs[0].id] = _read(env, kernel.inputs[0])
    elif kernel.fused is not None:
        _ops_kernel(kernel, kernel.fused.ops, env)
    else:
        _ops_kernel(kernel, [kernel.op], env)


def run_program(program: Program, args: list[Any], strict: bool = False, as_numpy: bool = True) -> list[Any]:
    """Execute `program` on `args` (one array per program input); returns its outputs."""
    env = values_before(program, args, len(program.kernels), strict)
    outs = [_read(env, v) for v in program.outputs]
    return [_to_numpy(o) for o in outs] if as_numpy else outs


def values_before(program: Program, args: list[Any], stop: int, strict: bool = False) -> Env:
    """Every value the program's first `stop` kernels make, by value id (with its inputs)."""
    env: Env = {v.id: a for v, a in zip(program.inputs, args)}
    for kernel in program.kernels[:stop]:
        run_kernel(kernel, env, strict)
    return env


def _to_numpy(x: Any) -> Any:
    """A NumPy array, except a typed PRNG key (flax.nnx's Rngs state), which stays a JAX key."""
    if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
        return x
    return np.asarray(x)
