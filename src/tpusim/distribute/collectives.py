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
  bandwidth. An all-reduce over several axes, or over an axis spanning slices, is hierarchical:
  reduce-scatter over ICI, all-reduce of the 1/ici shard over DCN (2 V/ici (s-1)/s / B_dcn over
  s slices), all-gather over ICI; gathers and scatters send 1/ici of V over DCN.
These are the textbook ring algorithms (the JAX scaling book's closed forms for TPUs).

GPU nodes: NVSwitch joins every GPU of a node, and NCCL runs rings over it; a ring's step is
limited by each GPU's NVLink bandwidth in one direction (half the bidirectional figure), so an
axis inside a node is a ring without wraparound at that rate: all-reduce 2 V (n-1)/n / W, as in
NCCL's own bus-bandwidth formulas (nccl-tests PERFORMANCE.md: busBw = algBw x 2(n-1)/n). Between
nodes, each GPU's NIC plays the DCN's part (hierarchical all-reduce as above).
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


def _link(chip: Chip, efficiency: float = 1.0) -> tuple[float, float]:
    """(one-way bandwidth per link available to ONE device, per-hop latency). A chip's links are
    shared by its devices: on v2/v3/TPU7x each TensorCore (chiplet) is its own JAX device, and in
    an SPMD program all of them communicate at once, so each gets its share (measured TPU7x
    all-gathers over 2x2 chips reach half the per-chip link rate)."""
    if chip.kind == "gpu" and chip.nvlink_bw_bidir_gbps is not None:
        w = chip.nvlink_bw_bidir_gbps.value * 1e9 / 2  # all of a GPU's NVLinks, one direction
    elif chip.kind == "gpu" and chip.host_link_bw_gbps is not None:
        w = chip.host_link_bw_gbps.value * 1e9  # a card without NVLink: its PCIe link, one direction
    else:
        w = chip.ici_link_bw_unidir_gbps.value * 1e9 if chip.ici_link_bw_unidir_gbps else 45e9
    h = chip.ici_hop_latency_us.value * 1e-6 if chip.ici_hop_latency_us else 1e-6
    return w * chip.device_fraction * efficiency, h


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


def _hierarchical_all_reduce(nbytes: float, axis_names: tuple[str, ...], mesh: Mesh, efficiency: float) -> CollectiveCost:
    """All-reduce over several axes, or over one that spans DCN and ICI, the bandwidth-optimal
    way (XLA's hierarchical/multi-dimensional all-reduce): reduce-scatter over the ICI rings one
    axis after another (each leaves a smaller shard), all-reduce only that shard over DCN, then
    all-gather back over ICI (the reduce-scatters mirrored)."""
    chip = mesh.system.chip
    w, h = _link(chip, efficiency)
    shard, bw_time, latency, dcn_slices = nbytes, 0.0, 0.0, 1
    for name in axis_names:
        axis = mesh.axis(name)
        if axis.over_dcn:
            dcn_slices = mesh.system.num_slices
            axis = AxisLinks(axis.name, axis.size // dcn_slices, axis.ring_sizes, axis.wraparound)
        if axis.size <= 1:
            continue
        t, hops = _ring_gather_time(axis, shard, w)
        bw_time += 2 * t  # reduce-scatter now, all-gather on the way back
        latency += 2 * hops * h
        shard /= axis.size
    if dcn_slices > 1:
        frac = (dcn_slices - 1) / dcn_slices
        bw_time += 2 * shard * frac / mesh.system.dcn_bytes_per_s_per_chip
        latency += 10e-6
    return CollectiveCost("all_reduce", tuple(axis_names), nbytes, bw_time + latency, bw_time, latency)


def collective_cost(kind: Kind, nbytes: float, axis_names: tuple[str, ...], mesh: Mesh,
                    link_efficiency: float = 1.0) -> CollectiveCost:
    """Time of one collective over the named mesh axes. An all-reduce over several axes or over
    DCN is hierarchical; other collectives go one axis after another, and over an axis spanning
    slices each chip sends over DCN only its slice's share. `link_efficiency` is the sustained
    fraction of the rated ICI link bandwidth (the generation's calibration)."""
    chip = mesh.system.chip
    w, h = _link(chip, link_efficiency)
    dcn = mesh.system.dcn_bytes_per_s_per_chip
    if kind == "all_reduce" and (len(axis_names) > 1 or any(mesh.axis(a).over_dcn for a in axis_names)):
        return _hierarchical_all_reduce(nbytes, axis_names, mesh, link_efficiency)
    bw_time = 0.0
    latency = 0.0
    for name in axis_names:
        axis = mesh.axis(name)
        if axis.size <= 1:
            continue
        if axis.over_dcn:
            s = mesh.system.num_slices
            frac = (s - 1) / s
            # Gathers and scatters go slice-level first: a chip exchanges over DCN only the
            # part its slice holds (1/ici of the tensor); an all-to-all or permute sends its own.
            ici_share = 1.0 / max(1, axis.size // s) if kind in ("all_gather", "reduce_scatter") else 1.0
            factor = {"all_gather": 1.0, "reduce_scatter": 1.0, "all_to_all": 1.0, "collective_permute": 1.0 / frac}[kind]
            bw_time += factor * nbytes * ici_share * frac / dcn
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
