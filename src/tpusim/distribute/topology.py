"""TPU slices, pods and multislice systems, with their real chip counts and torus shapes.

Naming follows Cloud TPU: the number after the version counts TensorCores on v2, v3, v4 and v5p
("v4-32" is 16 chips) and chips on v5e, v6e and TPU7x ("v5litepod-16", "v6e-256"). Shapes:
v2/v3/v5e/v6e are 2D tori, v4/v5p/TPU7x 3D tori built from 4x4x4 cubes. Wraparound links exist
only where the real slice has them (SB-tpus): on v4/v5p/TPU7x when the slice is made of whole
4x4x4 cubes (then on every axis); on v5e/v6e only along axes of length 16; on v2/v3 along the full pod's axes.
"Nxv5e-256" (or slices=N) joins N slices over the data-center network (DCN).

GPUs form nodes the same way: "h100-8" is one 8-GPU node whose GPUs all reach each other through
NVSwitch (one hop, each GPU's NVLink bandwidth); "4xh100-8" is four such nodes joined by the
InfiniBand/RoCE network (one NIC per GPU), which plays the role DCN plays between TPU slices.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from tpusim.errors import SliceConfigError, UnknownDeviceError
from tpusim.hardware.chip import Chip, resolve_device

# Versions whose slice names count TensorCores (2 per chip) rather than chips.
_COUNTS_CORES = {"v2", "v3", "v4", "v5p"}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e"}

# Standard slice shapes (chips). 2D: v5e/v6e slice shapes of the Cloud docs; v2/v3 powers of two.
_SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16),
              512: (16, 32), 1024: (32, 32)}




def _most_cubic(n: int) -> tuple[int, int, int]:
    """The a <= b <= c with a * b * c = n whose longest side is shortest (then the shortest
    longest)."""
    best = (1, 1, n)
    for a in range(1, round(n ** (1 / 3)) + 2):
        if n % a:
            continue
        for b in range(a, math.isqrt(n // a) + 1):
            if (n // a) % b == 0:
                cand = (a, b, n // a // b)
                if (cand[2], -cand[0]) < (best[2], -best[0]):
                    best = cand
    return best


def _valid_3d(chips: int) -> bool:
    """Below one 4x4x4 cube, slices are powers of two (2x2x1 ... 2x4x4); from 64 chips on they
    are whole cubes: every side a multiple of 4 (Cloud TPU's v4/v5p/TPU7x topologies)."""
    return (chips < 64 and chips & (chips - 1) == 0) or (chips >= 64 and chips % 64 == 0)


def _shape_3d(chips: int) -> tuple[int, int, int]:
    """Cloud TPU's default topology for a chip count: 2x2x1, 2x2x2, 2x2x4, 2x4x4 below a cube,
    then the most cubic arrangement of 4x4x4 cubes (v4-384 is 4x4x12, v5p-3072 8x12x16)."""
    if not _valid_3d(chips):
        raise SliceConfigError(f"{chips} chips is not a 3D slice: below 64 chips a power of two, from 64 on a "
                               f"multiple of 64 (whole 4x4x4 cubes), e.g. 64, 128, 192, 256, 384, 512")
    if chips < 64:
        dims = [1, 1, 1]
        i = 0
        while math.prod(dims) < chips:
            dims[i % 3] *= 2
            i += 1
        return tuple(sorted(dims))  # type: ignore[return-value]
    return tuple(4 * d for d in _most_cubic(chips // 64))  # type: ignore[return-value]


@dataclass(frozen=True)
class Slice:
    """One slice: `shape` chips along each torus axis, `wraparound` per axis."""

    chip: Chip
    name: str
    shape: tuple[int, ...]
    wraparound: tuple[bool, ...]

    @property
    def chips(self) -> int:
        return math.prod(self.shape)

    @property
    def hosts(self) -> int:
        per_host = int(self.chip.chips_per_host.value) if self.chip.chips_per_host else (
            GPUS_PER_NODE if self.chip.kind == "gpu" else 4)
        return max(1, math.ceil(self.chips / per_host))

    @property
    def devices(self) -> int:
        """JAX devices: one per chip on megacore/single-core chips and GPUs, one per TensorCore otherwise."""
        if self.chip.kind != "tpu":
            return self.chips
        cores = int(self.chip.tensorcores_per_chip.value) if self.chip.tensorcores_per_chip else 1
        return self.chips * (cores // self.chip.cores_per_device)

    def describe(self) -> str:
        if self.chip.kind == "gpu":
            link = "NVLink/NVSwitch" if self.chip.nvlink_bw_bidir_gbps is not None else "PCIe"
            return f"{self.name}: {self.chips} GPUs in one {link} node"
        torus = "x".join(str(d) for d in self.shape)
        wrap = ",".join("wrap" if w else "open" for w in self.wraparound)
        return f"{self.name}: {self.chips} chips ({torus}, {wrap}), {self.hosts} hosts"


@dataclass(frozen=True)
class System:
    """One or more identical slices; several slices talk over DCN."""

    slice: Slice
    num_slices: int = 1
    name: str = ""

    @property
    def chip(self) -> Chip:
        return self.slice.chip

    @property
    def chips(self) -> int:
        return self.slice.chips * self.num_slices

    @property
    def dcn_bytes_per_s_per_chip(self) -> float:
        c = self.chip.dcn_bw_per_chip_gbitps
        return c.value * 1e9 / 8 if c else 6.25e9

    def describe(self) -> str:
        head = f"{self.num_slices} x " if self.num_slices > 1 else ""
        network = "the node network" if self.chip.kind == "gpu" else "DCN"
        return head + self.slice.describe() + (f", joined by {network} at {self.dcn_bytes_per_s_per_chip / 1e9:.2f} GB/s per chip"
                                               if self.num_slices > 1 else "")


def _wraparound(version: str, shape: tuple[int, ...], chip: Chip) -> tuple[bool, ...]:
    if version in ("v4", "v5p", "tpu7x"):  # only slices of whole 4x4x4 cubes get wraparound
        whole_cubes = all(d % 4 == 0 for d in shape)
        return tuple(whole_cubes for _ in shape)
    if version in ("v5e", "v6e"):
        return tuple(d == 16 for d in shape)
    full = _SHAPES_2D.get(int(chip.pod_max_chips.value) if chip.pod_max_chips else 0)
    return tuple(full is not None and d == full[i] and d > 2 for i, d in enumerate(shape))


# GPUs in one NVLink/NVSwitch domain (an HGX/DGX node). SB-gpus: 8 per H100/B200 HGX node.
GPUS_PER_NODE = 8


def _gpu_node(chip: Chip, gpus: int) -> Slice:
    if chip.nvlink_bw_bidir_gbps is None and chip.host_link_bw_gbps is None:
        raise SliceConfigError(f"{chip.display_name} has neither NVLink nor a PCIe bandwidth (host_link_bw_gbps) in "
                               "its chip file, so its multi-GPU nodes cannot be timed: add one (sourced), or use a GPU "
                               "such as h100 or a100")
    if gpus < 1:
        raise SliceConfigError(f"a {chip.name} node holds 1 to {GPUS_PER_NODE} GPUs, asked for {gpus}")
    if gpus > GPUS_PER_NODE:
        raise SliceConfigError(f"one {chip.name} node holds at most {GPUS_PER_NODE} GPUs, asked for {gpus}; "
                               f"join nodes over the network as 'Nx{chip.name}-{GPUS_PER_NODE}' (e.g. "
                               f"'{-(-gpus // GPUS_PER_NODE)}x{chip.name}-{GPUS_PER_NODE}')")
    return Slice(chip, f"{chip.name}-{gpus}", (gpus,), (False,))


def make_slice(version: str, chips: int, shape: tuple[int, ...] | None = None) -> Slice:
    chip = resolve_device(version)
    version = chip.name
    if chip.kind == "gpu":
        return _gpu_node(chip, chips)
    if chip.kind != "tpu" or version == "v1":
        raise SliceConfigError(f"{chip.display_name} has no ICI: it cannot form slices")
    limit = int(chip.pod_max_chips.value) if chip.pod_max_chips else chips
    if chips < 1 or chips > limit:
        raise SliceConfigError(f"{version} slices hold 1 to {limit} chips, asked for {chips}")
    three_d = version in ("v4", "v5p", "tpu7x")
    if shape is None:
        if three_d:
            shape = _shape_3d(chips)
        elif chips in _SHAPES_2D:
            shape = _SHAPES_2D[chips]
        else:
            raise SliceConfigError(f"{chips} chips is not a standard {version} slice "
                                   f"(one of {', '.join(str(k) for k in _SHAPES_2D if k <= limit)})")
    if math.prod(shape) != chips:
        raise SliceConfigError(f"shape {shape} holds {math.prod(shape)} chips, not {chips}")
    if not three_d and len(shape) != 2:
        raise SliceConfigError(f"{version} slices are 2D tori: give two sides (e.g. 4x8), not "
                               f"{'x'.join(map(str, shape))}")
    if three_d and (len(shape) != 3 or (chips >= 64 and any(d % 4 for d in shape))):
        raise SliceConfigError(f"{version} topology {'x'.join(map(str, shape))} is not a Cloud TPU slice: three "
                               f"sides, each a multiple of 4 from 64 chips on (e.g. 4x4x8, 4x8x64)")
    name = f"{version}-{chips * 2 if version in _COUNTS_CORES else chips}"
    return Slice(chip, name, tuple(shape), _wraparound(version, tuple(shape), chip))


_PATTERN = re.compile(r"^(?:(\d+)\s*x\s*)?([a-z0-9]+(?:-[a-z0-9]+)?)-(\d+)$")
_TOPOLOGY = re.compile(r"^(?:(\d+)\s*x\s*)?([a-z0-9]+(?:-[a-z]+)?):(\d+(?:x\d+){1,2})$")


def parse_system(name: str) -> System | None:
    """'v4-32', 'v5litepod-16', 'v5e-16', 'v5p-128', 'v6e-256', 'tpu7x-64', '2xv5e-256', or a
    version with an explicit topology as Cloud TPU gives it: 'v4:4x8x64', 'v5e:4x8', '2xv5p:8x8x16'.
    Returns None when `name` names a single chip rather than a slice."""
    t = _TOPOLOGY.match(name.strip().lower())
    if t:
        count, version, dims = t.group(1), _ALIASES.get(t.group(2), t.group(2)), t.group(3)
        shape = tuple(int(d) for d in dims.split("x"))
        chip = resolve_device(version)
        sl = make_slice(chip.name, math.prod(shape), shape)
        return System(sl, int(count) if count else 1, name)
    m = _PATTERN.match(name.strip().lower())
    if not m:
        return None
    count, version, number = m.group(1), m.group(2), int(m.group(3))
    version = _ALIASES.get(version, version)
    try:
        chip = resolve_device(version)
    except UnknownDeviceError:
        return None
    chips = number // 2 if chip.name in _COUNTS_CORES else number
    if chip.name in _COUNTS_CORES and number % 2:
        raise SliceConfigError(f"'{name}': {chip.name} slice names count TensorCores (2 per chip); use an even number")
    sl = make_slice(chip.name, chips)
    return System(sl, int(count) if count else 1, name)


@dataclass
class MeshAxis:
    """A logical mesh axis (e.g. 'data') laid over physical torus axes (or over DCN)."""

    name: str
    size: int
    torus_axes: list[int] = field(default_factory=list)
    over_dcn: bool = False
