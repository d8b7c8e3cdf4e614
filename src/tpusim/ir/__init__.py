"""The graph IR: typed values and ops, each op with its FLOP and byte counts."""

from tpusim.ir.graph import Graph, Op, Value
from tpusim.ir.counts import Counts, op_counts, graph_counts

__all__ = ["Graph", "Op", "Value", "Counts", "op_counts", "graph_counts"]
