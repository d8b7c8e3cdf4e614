"""What collectives cost on the ICI torus and over DCN.

For one mesh axis of n devices laid over rings (one per torus axis it spans), with per-link
one-way bandwidth W and per-hop latency h (chip file):
- all-gather (output V bytes per device) and reduce-scatter (input V bytes): every device must
  receive (n-1)/n of V. A ring with wraparound moves data both ways: V (n-1)/n / (2W); without
  wraparound the ring is a line and the far ends limit it to V (n-1)/n / W. An axis spanning k
  torus axes uses all of their links at once (k times the bandwidth). Latency: the ring's
  diameter in hops (n/2 with wraparound, n - 1 without).
- all-reduce = reduce-scatter + all-gather.
- all-to-all (V bytes per device): on a bidirectional ring the average message travels n/4
  hops, so V (n-1) / (8W) with wraparound, twice that without.
- collective-permute (shift by one): V / W plus one hop.
- DCN (multislice): each chip moves its share through its host NICs at the chip's DCN
  bandwidth: all-reduce 2 V (s-1)/s / B_dcn over s slices; all-gather half of that.
These are the textbook ring algorithms (the JAX scaling book's closed forms for TPUs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tpusim.distribute.mesh import AxisLinks, Mesh
from tpusim.hardware.chip import Chip

Kind = Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "collective_permute"]


@dataclass(frozen=True)
class CollectiveCost:
    kind: str
    axes: tuple[str, ...]
    bytes: float
    time_s: float
    bandwidth_s: float
    latency_s: float


def _link(chip: Chip) -> tuple[float, float]:
    w = chip.ici_link_bw_unidir_gbps.value * 1e9 if chip.ici_link_bw_unidir_gbps else 45e9
    h = chip.ici_hop_latency_us.value * 1e-6 if chip.ici_hop_latency_us else 1e-6
    return w, h


def _ring_gather_time(axis: AxisLinks, nbytes: float, w: float) -> tuple[float, float]:
    """(bandwidth time, hops) for moving (n-1)/n of nbytes to every device of the axis."""
    n = axis.size
    if n <= 1:
        return 0.0, 0
    frac = (n - 1) / n
    # Each ring carries its share; rings on different torus axes work in parallel.
    per_ring_bw = [2 * w if wrap else w for wrap in axis.wraparound] or [w]
    bandwidth = sum(per_ring_bw)
    hops = sum(r // 2 if wrap else r - 1 for r, wrap in zip(axis.ring_sizes, axis.wraparound))
    return nbytes * frac / bandwidth, hops


def collective_cost(kind: Kind, nbytes: float, axis_names: tuple[str, ...], mesh: Mesh) -> CollectiveCost:
    """Time of one collective over the named mesh axes (applied one axis after another)."""
    chip = mesh.system.chip
    w, h = _link(chip)
    dcn = mesh.system.dcn_bytes_per_s_per_chip
    bw_time = 0.0
    latency = 0.0
    for name in axis_names:
        axis = mesh.axis(name)
        if axis.size <= 1:
            continue
        if axis.over_dcn:
            s = mesh.system.num_slices
            frac = (s - 1) / s
            factor = {"all_reduce": 2.0, "all_gather": 1.0, "reduce_scatter": 1.0, "all_to_all": 1.0,
                      "collective_permute": 1.0 / frac}[kind]
            bw_time += factor * nbytes * frac / dcn
            latency += 10e-6  # a DCN round trip is tens of microseconds; modelling choice
            ici = AxisLinks(axis.name, axis.size // s, axis.ring_sizes, axis.wraparound)
            if ici.size <= 1:
                continue
            axis = ici
        t, hops = _ring_gather_time(axis, nbytes, w)
        if kind == "all_reduce":
            bw_time += 2 * t
            latency += 2 * hops * h
        elif kind in ("all_gather", "reduce_scatter"):
            bw_time += t
            latency += hops * h
        elif kind == "all_to_all":
            n = axis.size
            wrap = all(axis.wraparound) if axis.wraparound else False
            bw_time += nbytes * (n - 1) / ((8 if wrap else 4) * w * max(1, len(axis.ring_sizes)))
            latency += hops * h
        else:  # collective_permute
            bw_time += nbytes / w
            latency += h
    return CollectiveCost(kind, tuple(axis_names), nbytes, bw_time + latency, bw_time, latency)
