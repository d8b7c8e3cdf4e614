"""Many chips: slices and pods named as Cloud TPU names them, meshes, collectives on the ICI
torus and over the data-center network."""

from tpusim.distribute.topology import Slice, System, parse_system

__all__ = ["Slice", "System", "parse_system"]
