"""Many chips: slices and pods named as Cloud TPU names them, meshes, collectives on the ICI
torus and over the data-center network."""

from tpusim.distribute.specs import batch_specs, fsdp_specs
from tpusim.distribute.strategy import TPUStrategy
from tpusim.distribute.topology import Slice, System, parse_system

__all__ = ["Slice", "System", "TPUStrategy", "batch_specs", "fsdp_specs", "parse_system"]
