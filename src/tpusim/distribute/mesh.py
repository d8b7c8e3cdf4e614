"""A device mesh: named logical axes (as in jax.sharding.Mesh) laid over a system's torus axes,
and over DCN for multislice. Each mesh axis becomes a set of rings whose links, wraparound and
hop count decide what its collectives cost."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tpusim.distribute.topology import SliceConfigError, System


@dataclass(frozen=True)
class AxisLinks:
    """What one mesh axis rides on: `ring_sizes` (one ring per torus axis it spans),
    `wraparound` per ring, or DCN."""

    name: str
    size: int
    ring_sizes: tuple[int, ...]
    wraparound: tuple[bool, ...]
    over_dcn: bool = False


@dataclass(frozen=True)
class Mesh:
    system: System
    axes: tuple[AxisLinks, ...]

    @property
    def shape(self) -> dict[str, int]:
        return {a.name: a.size for a in self.axes}

    @property
    def devices(self) -> int:
        return math.prod(a.size for a in self.axes)

    def axis(self, name: str) -> AxisLinks:
        for a in self.axes:
            if a.name == name:
                return a
        raise SliceConfigError(f"mesh has no axis '{name}' (axes: {', '.join(self.shape)})")


def make_mesh(system: System, axes: dict[str, int]) -> Mesh:
    """Lay named axes over the system in order: the first axis takes DCN when there are several
    slices (sized as the number of slices, or a multiple of it), then torus axes are filled in
    order; a torus axis split between two mesh axes becomes rings without wraparound."""
    sizes = dict(axes)
    physical = [(d, w) for d, w in zip(system.slice.shape, system.slice.wraparound) if d > 1]
    devices = system.slice.devices * system.num_slices
    if math.prod(sizes.values()) != devices:
        raise SliceConfigError(f"mesh {sizes} has {math.prod(sizes.values())} devices but {system.name or system.slice.name} "
                               f"has {devices}")
    per_chip = system.slice.devices // system.slice.chips
    if per_chip > 1:  # v2/v3/TPU7x: each chip is several devices, joined on-package (modelled as a short ring)
        physical.append((per_chip, False))
    cursor = 0  # index into physical axes
    left_in_axis = physical[0][0] if physical else 1
    out = []
    dcn_left = system.num_slices
    for name, size in sizes.items():
        rings, wraps = [], []
        remaining = size
        over_dcn = False
        if dcn_left > 1:
            if remaining % dcn_left:
                raise SliceConfigError(f"with {system.num_slices} slices the first mesh axis must be a multiple of {system.num_slices}")
            remaining //= dcn_left
            dcn_left = 1
            over_dcn = True
        while remaining > 1:
            if cursor >= len(physical):
                raise SliceConfigError(f"mesh {sizes} does not fit the torus {system.slice.shape}")
            full, wrap = physical[cursor]
            take = math.gcd(remaining, left_in_axis)
            if take == 1:
                raise SliceConfigError(f"mesh axis '{name}' of {size} cannot be laid over torus {system.slice.shape}")
            rings.append(take)
            wraps.append(wrap and take == full)
            remaining //= take
            left_in_axis //= take
            if left_in_axis == 1:
                cursor += 1
                left_in_axis = physical[cursor][0] if cursor < len(physical) else 1
        out.append(AxisLinks(name, size, tuple(rings), tuple(wraps), over_dcn))
    return Mesh(system, tuple(out))
