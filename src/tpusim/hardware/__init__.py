"""Hardware descriptions: chips as validated data files, each number with its source."""

from tpusim.hardware.chip import Chip, Sourced, load_chip, list_devices, resolve_device

__all__ = ["Chip", "Sourced", "load_chip", "list_devices", "resolve_device"]
