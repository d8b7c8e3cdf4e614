"""The graph passes a compile runs, as one named pipeline.

Each pass is a function Graph -> Graph that returns a new graph and leaves its input as it was
(a lowered program is compiled for many devices). The pipeline keeps the graph after every
named pass, so `Compiled.as_text("canonicalize")` shows the IR as that pass left it, and
`TPUSIM_DUMP_IR_AFTER=canonicalize,fuse` (or `all`) prints it to stderr as it compiles, like
XLA's --xla_dump_hlo_pass_re. With `TPUSIM_VERIFY_IR=1` (the tests set it) the IR verifier
(ir/verify.py) runs after every pass and names the pass that broke an invariant.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable

from tpusim.compiler.canonicalize import canonicalize
from tpusim.compiler.fusion import XLA_TPU, FusionRules, fuse
from tpusim.compiler.precision import assign_precision
from tpusim.errors import TpusimError
from tpusim.ir.graph import Graph
from tpusim.ir.verify import verify_graph


@dataclass(frozen=True)
class GraphPass:
    name: str
    run: Callable[[Graph], Graph]


def graph_passes(precision: str, mxu_dtype: str, fusion_rules: FusionRules = XLA_TPU) -> tuple[GraphPass, ...]:
    """The device-dependent graph passes, in order. api.py records the lowered graph as
    "lowered", runs sharding first on a slice ("shard"), and after them, only when the program
    does not fit, "rematerialize" (which needs the emitted program's peak). `fusion_rules`:
    what one kernel may hold on the device (its model's `DeviceTimer.fusion_rules`)."""
    return (
        GraphPass("canonicalize", canonicalize),
        GraphPass("assign_precision", lambda g: assign_precision(g, precision, mxu_dtype)),
        GraphPass("fuse", lambda g: fuse(g, fusion_rules)),
    )


PASS_NAMES = ("lowered", "shard", "canonicalize", "assign_precision", "fuse", "rematerialize")


def verifying() -> bool:
    return os.environ.get("TPUSIM_VERIFY_IR", "") not in ("", "0")


def _dump_names() -> set[str]:
    """The passes TPUSIM_DUMP_IR_AFTER names; a misspelt one is an error, not a silent no-dump."""
    names = {s.strip() for s in os.environ.get("TPUSIM_DUMP_IR_AFTER", "").split(",") if s.strip()}
    unknown = names - set(PASS_NAMES) - {"all"}
    if unknown:
        raise TpusimError(f"TPUSIM_DUMP_IR_AFTER names no pass {sorted(unknown)}: use 'all' or any of "
                          f"{', '.join(PASS_NAMES)}")
    return names


def record(after: dict[str, Graph], name: str, graph: Graph) -> Graph:
    """Keep `graph` as the IR after pass `name`: verify it if asked, dump it if asked."""
    if verifying():
        verify_graph(graph, after=name)
    dump = _dump_names()
    if name in dump or "all" in dump:
        print(f"// tpusim IR after {name}\n{graph.pretty()}", file=sys.stderr)
    after[name] = graph
    return graph


def run_graph_passes(graph: Graph, passes: tuple[GraphPass, ...], after: dict[str, Graph]) -> Graph:
    """Run `passes` in order, recording the graph after each in `after`."""
    for p in passes:
        graph = record(after, p.name, p.run(graph))
    return graph
