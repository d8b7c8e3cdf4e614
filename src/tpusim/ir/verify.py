"""The IR's invariants, checked between compiler passes (switched on in the tests).

A pass that breaks one fails right after it runs, naming the pass, the op and the rule, instead
of surfacing kernels later as a wrong number or a KeyError deep in the emitter.
"""

from __future__ import annotations

from tpusim.errors import TpusimError
from tpusim.ir.graph import Fusion, Graph
from tpusim.ir.primitives import PRIMITIVES


class IRVerificationError(TpusimError):
    """A compiler pass left the IR broken (a tpusim bug, not a user error)."""


def verify_graph(graph: Graph, after: str = "") -> None:
    """Raise IRVerificationError unless `graph` is well formed: every op a known primitive,
    values defined once and before they are read (SSA, in order), outputs defined, shapes
    non-negative, and fused kernels consistent with their bodies; nested bodies likewise."""
    problems: list[str] = []
    _check(graph, problems, "")
    if problems:
        head = f"IR broken after pass '{after}'" if after else "IR broken"
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise IRVerificationError(f"{head} (a tpusim compiler bug; please report it):\n  {shown}{more}")


def _check(graph: Graph, problems: list[str], where: str) -> None:
    defined: set[int] = set()
    for v in graph.inputs:
        if v.id in defined:
            problems.append(f"{where}input {v!r} listed twice")
        defined.add(v.id)
    for op in graph.ops:
        at = f"{where}{op!r}"
        if op.prim not in PRIMITIVES:
            problems.append(f"{at}: '{op.prim}' has no entry in ir/primitives.py")
        for v in op.inputs:
            if not v.is_const and v.id not in defined:
                problems.append(f"{at}: reads {v!r} before anything defines it")
        for v in op.outputs:
            if v.id in defined:
                problems.append(f"{at}: defines {v!r} again")
            if any(d < 0 for d in v.shape):
                problems.append(f"{at}: negative dimension in {v!r}")
            defined.add(v.id)
        if isinstance(op, Fusion):
            _check_fusion(op, problems, at)
        for name, body in op.subgraphs.items():
            _check(body, problems, f"{at} [{name}] ")
    for v in graph.outputs:
        if not v.is_const and v.id not in defined:
            problems.append(f"{where}returns {v!r}, which nothing defines")


def _check_fusion(op: Fusion, problems: list[str], at: str) -> None:
    body = op.subgraphs.get("fused")
    if body is None:
        problems.append(f"{at}: a fusion without its fused body")
        return
    if [v.id for v in body.inputs] != [v.id for v in op.inputs]:
        problems.append(f"{at}: the fused body's inputs are not the kernel's")
    made = {v.id for o in body.ops for v in o.outputs} | {v.id for v in body.inputs}
    if any(v.id not in made and not v.is_const for v in op.outputs):
        problems.append(f"{at}: a kernel output its body does not make")
    if op.kind in ("matmul", "conv"):
        if op.anchor is None or not any(o is op.anchor for o in body.ops):
            problems.append(f"{at}: an MXU fusion whose anchor is not among its fused ops")
    elif op.kind != "loop":
        problems.append(f"{at}: unknown fusion kind '{op.kind}'")

