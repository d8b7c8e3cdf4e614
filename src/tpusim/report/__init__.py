"""Reports: rich tables for devices, kernels and program summaries."""
