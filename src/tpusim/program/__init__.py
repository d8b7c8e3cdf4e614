"""The compiled Program: kernels with grids, block specs and per-step DMA/compute work."""

from tpusim.program.program import BlockSpec, Kernel, MxuPlan, Program, Step

__all__ = ["BlockSpec", "Kernel", "MxuPlan", "Program", "Step"]
