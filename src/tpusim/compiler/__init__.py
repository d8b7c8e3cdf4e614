"""Compiler passes, each a function Graph -> Graph (or -> Program) that can be run alone:
canonicalize, assign_precision, fuse, then emit_program (tiling inside) and allocate."""

from tpusim.compiler.allocate import allocate
from tpusim.compiler.canonicalize import canonicalize
from tpusim.compiler.emit import emit_program
from tpusim.compiler.fusion import fuse
from tpusim.compiler.precision import assign_precision
from tpusim.compiler.tiling import plan_mxu

__all__ = ["allocate", "canonicalize", "emit_program", "fuse", "assign_precision", "plan_mxu"]
