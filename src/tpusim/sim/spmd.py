"""Numerics of a sharded program on several simulated devices, run in lockstep: every device
executes the same per-device Program on its own data; collective kernels combine the devices'
values exactly as the collective defines (in device order along the mesh axes)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tpusim.compiler.shard import Sharding, axes_index, device_coords
from tpusim.ir.primitives import PRIMITIVES
from tpusim.program.program import Program
from tpusim.sim.numerics import _read, run_kernel


def _groups(axes: tuple[str, ...], mesh_axes: dict[str, int]) -> dict[tuple, list[int]]:
    """Devices that talk in a collective over `axes`: same coordinates on every other axis,
    listed in order along `axes`."""
    groups: dict[tuple, list[tuple[int, int]]] = {}
    for d in range(math.prod(mesh_axes.values())):
        c = device_coords(d, mesh_axes)
        key = tuple(c[a] for a in mesh_axes if a not in axes)
        groups.setdefault(key, []).append((axes_index(c, axes, mesh_axes), d))
    return {k: [d for _, d in sorted(v)] for k, v in groups.items()}


def _collective(kernel: Any, envs: list[dict], mesh_axes: dict[str, int]) -> None:
    """Each device group's values combined as the collective's entry defines (ir/primitives.py)."""
    op = kernel.op
    semantics = PRIMITIVES[op.prim].collective
    src, dst = op.inputs[0], op.outputs[0]
    for members in _groups(tuple(op.params["axes"]), mesh_axes).values():
        vals = [np.asarray(_read(envs[d], src)) for d in members]
        for pos, d in enumerate(members):
            envs[d][dst.id] = semantics(vals, pos, op.params, np)


def run_spmd(program: Program, mesh_axes: dict[str, int], per_device_args: list[list[Any]],
             strict: bool = False) -> list[list[Any]]:
    """Execute `program` on every device of the mesh; returns each device's outputs."""
    n = math.prod(mesh_axes.values())
    envs: list[dict] = [{v.id: a for v, a in zip(program.inputs, per_device_args[d])} for d in range(n)]
    for kernel in program.kernels:
        if kernel.kind == "collective":
            _collective(kernel, envs, mesh_axes)
        elif kernel.kind == "scan" and _has_collectives(kernel.bodies["body"]):
            _scan_lockstep(kernel, envs, mesh_axes, strict)
        else:
            for env in envs:
                run_kernel(kernel, env, strict)
    return [[np.asarray(_read(env, v)) for v in program.outputs] for env in envs]


def _has_collectives(program: Program) -> bool:
    return any(k.kind == "collective" for k in program.all_kernels())


def _scan_lockstep(kernel: Any, envs: list[dict], mesh_axes: dict[str, int], strict: bool) -> None:
    """A scan whose body talks to other devices: every iteration runs on all devices at once."""
    op = kernel.op
    p = op.params
    nc, nk, length = int(p["num_consts"]), int(p["num_carry"]), int(p["length"])
    args = [[_read(env, v) for v in op.inputs] for env in envs]
    carries = [a[nc:nc + nk] for a in args]
    ys: list[list[list[Any]]] = [[] for _ in envs]
    order = range(length - 1, -1, -1) if p.get("reverse") else range(length)
    for i in order:
        per_device = [a[:nc] + c + [x[i] for x in a[nc + nk:]] for a, c in zip(args, carries)]
        outs = run_spmd(kernel.bodies["body"], mesh_axes, per_device, strict)
        carries = [o[:nk] for o in outs]
        for d, o in enumerate(outs):
            ys[d].append(o[nk:])
    for d, env in enumerate(envs):
        steps = ys[d][::-1] if p.get("reverse") else ys[d]
        stacked = [np.stack([s[j] for s in steps]) for j in range(len(op.outputs) - nk)]
        for v, r in zip(op.outputs, [*carries[d], *stacked]):
            env[v.id] = r


def assemble(per_device: list[np.ndarray], sh: Sharding, mesh_axes: dict[str, int]) -> np.ndarray:
    """The global array from every device's block."""
    first = per_device[0]
    shape = [size * math.prod(mesh_axes[a] for a in axes) for size, axes in zip(np.shape(first), sh.dims)]
    out = np.empty(shape, dtype=np.asarray(first).dtype)
    for d, block in enumerate(per_device):
        c = device_coords(d, mesh_axes)
        index = []
        for size, axes in zip(np.shape(block), sh.dims):
            k = axes_index(c, axes, mesh_axes)
            index.append(slice(k * size, (k + 1) * size))
        out[tuple(index)] = block
    return out
