"""Simulators that interpret a compiled Program: numerics (real outputs) and, later, timing."""

from tpusim.sim.numerics import run_program

__all__ = ["run_program"]
