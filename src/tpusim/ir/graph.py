"""Typed graph IR.

A Graph is a list of Ops in a valid execution order over Values. Values are SSA: each has one
producer (an op, or the graph's inputs/constants). Control flow (scan, while, cond) keeps its
bodies as nested Graphs so that loops stay loops.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Role = Literal["input", "param", "literal", "temp"]

# Ids key values and ops within one program (environments, use maps) and name unnamed values
# (%12). They are numbered per lowering: `lower` counts from 0 and each compile goes on after the
# lowered graph's highest id, so the same model prints the same IR however much the process
# lowered before. A graph built by hand outside both (tests) draws from a range of its own above
# any lowering's, so that passes run on a lowered graph outside a compile cannot reuse its ids.
_HAND_BUILT_IDS = itertools.count(1 << 40)
_ids: ContextVar[Iterator[int] | None] = ContextVar("tpusim_ids", default=None)


def _next_id() -> int:
    return next(_ids.get() or _HAND_BUILT_IDS)


@contextmanager
def numbering(start: int = 0) -> Iterator[None]:
    """Number the values and ops made inside from `start` (a lowering: 0; a compile: after the
    lowered graph's ids, `next_id(graph)`)."""
    token = _ids.set(itertools.count(start))
    try:
        yield
    finally:
        _ids.reset(token)


@dataclass(eq=False)
class Value:
    """An array in the program. `const` holds data for parameters and literals."""

    shape: tuple[int, ...]
    dtype: np.dtype
    role: Role = "temp"
    const: np.ndarray | None = None
    name: str = ""
    category: str = ""  # what the buffer holds, when known: "activation", "gradient", ...
    memory: str = "device"  # "host": offloaded to the host's memory (no HBM buffer)
    id: int = field(default_factory=_next_id)

    def __post_init__(self) -> None:
        self.shape = tuple(int(d) for d in self.shape)
        self.dtype = np.dtype(self.dtype)
        if not self.name:
            self.name = f"%{self.id}"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def is_const(self) -> bool:
        return self.const is not None

    def __repr__(self) -> str:
        return f"{self.name}:{self.dtype.name}{list(self.shape)}"


@dataclass(eq=False)
class Op:
    """One primitive application. `prim` is the JAX primitive name; `jax_prim` the object."""

    prim: str
    inputs: list[Value]
    outputs: list[Value]
    params: dict[str, Any]
    where: str = ""  # the user's source line
    jax_prim: Any = None
    subgraphs: dict[str, "Graph"] = field(default_factory=dict)
    scope: str = ""  # JAX name stack, e.g. the Keras layer name
    id: int = field(default_factory=_next_id)

    def __repr__(self) -> str:
        ins = ", ".join(v.name for v in self.inputs)
        outs = ", ".join(repr(v) for v in self.outputs)
        return f"{outs} = {self.prim}({ins})"


@dataclass(eq=False, repr=False)
class Fusion(Op):
    """One kernel's worth of ops (made by compiler/fusion.py), in `subgraphs["fused"]`: a VPU
    `loop` fusion, or a `matmul`/`conv` fusion built around its MXU `anchor` (prologue, product,
    epilogue)."""

    kind: str = "loop"
    anchor: Op | None = None


@dataclass(eq=False)
class Graph:
    inputs: list[Value]
    outputs: list[Value]
    ops: list[Op]

    def consumers(self) -> dict[int, list[Op]]:
        """Map value id -> ops (in this graph, not nested) that read it."""
        users: dict[int, list[Op]] = {}
        for op in self.ops:
            for v in op.inputs:
                users.setdefault(v.id, []).append(op)
        return users

    def walk(self):
        """All ops, nested bodies included (depth first)."""
        for op in self.ops:
            yield op
            for g in op.subgraphs.values():
                yield from g.walk()

    def pretty(self, indent: str = "") -> str:
        lines = [f"{indent}graph({', '.join(repr(v) for v in self.inputs)}):"]
        for op in self.ops:
            lines.append(f"{indent}  {op!r}")
            for name, g in op.subgraphs.items():
                lines.append(f"{indent}    [{name}]")
                lines.append(g.pretty(indent + "      "))
        lines.append(f"{indent}  return {', '.join(v.name for v in self.outputs)}")
        return "\n".join(lines)


def next_id(graph: Graph) -> int:
    """One past the highest id in `graph` (nested bodies included): where a compile of it may
    start numbering the values and ops its passes make."""
    ids = [-1]
    for op in graph.walk():
        ids.append(op.id)
        ids.extend(v.id for v in [*op.inputs, *op.outputs])
        ids.extend(v.id for g in op.subgraphs.values() for v in g.inputs)
    ids.extend(v.id for v in graph.inputs)
    return max(ids) + 1
