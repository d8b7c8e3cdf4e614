"""Program data structures, shared by the numerics and timing interpreters.

A Kernel is what one TPU launch does: a grid of steps; at each step its BlockSpecs say which
slice of every HBM operand is DMA'd into VMEM (and which output slice is written back), and
its Steps say what the DMA engines, the MXUs and the VPU do with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tpusim.ir.counts import Counts
from tpusim.ir.graph import Fusion, Graph, Op, Value

KernelKind = Literal["matmul", "conv", "loop", "window", "gather", "random", "movement", "scan", "while", "cond",
                     "collective", "transfer"]


@dataclass
class BlockSpec:
    """The slice of `operand` one grid step touches: `block_shape`, indexed by the grid axes in
    `index_map` (one name per block dim, '' for a dim taken whole or walked inside the step)."""

    operand: Value
    block_shape: tuple[int, ...]
    index_map: tuple[str, ...]
    role: Literal["in", "out"] = "in"

    def __str__(self) -> str:
        idx = ", ".join(a or ":" for a in self.index_map)
        return f"{self.role} {self.operand.name} block {list(self.block_shape)} @ ({idx})"


@dataclass
class Step:
    """Work in one grid step: a DMA, an MXU pass or VPU work."""

    unit: Literal["dma_in", "mxu", "vpu", "dma_out"]
    what: str
    bytes: int = 0
    flops: int = 0


@dataclass
class MxuPlan:
    """How a matmul/conv is cut into MXU-sized blocks (all sizes after padding)."""

    precision: str
    passes: int
    batch: int  # independent matmuls (dot batch dims; conv: groups)
    M: int
    K: int
    N: int
    taps: int  # conv filter taps (1 for a matmul)
    Mp: int
    Kp: int
    Np: int
    tm: int
    tk: int
    tn: int
    vmem_bytes: int  # VMEM the blocks need, double-buffered
    in_itemsize: int
    out_itemsize: int
    operand_type: str = "bf16"  # what the MXU is fed: bf16, f16, f32 (as bf16 passes), int8, fp8, int
    # "mxu", or "vpu" for a depthwise convolution run as multiply-adds with channels on lanes
    engine: str = "mxu"
    groups_per_tile: int = 1  # grouped convs: groups packed block-diagonally into one weight tile
    lanes: int = 128  # engine "vpu": channels as the padded vregs hold them (idle lanes included)
    dma_itemsize: int = 0  # bytes per operand element as DMA'd from HBM (an f32 source converted in VMEM: 4); 0: in_itemsize

    @property
    def first_step_bytes(self) -> int:
        """What the pipeline moves before the MXU can start and after it stops: the first
        step's operand blocks and the last step's output block."""
        return (self.tm * self.tk + self.tk * self.tn) * (self.dma_itemsize or self.in_itemsize) + self.tm * self.tn * self.out_itemsize

    @property
    def grid(self) -> tuple[int, int, int]:
        """(M blocks, N blocks, taps x K blocks); a last block may be partial (masked)."""
        cdiv = lambda a, b: -(-a // b)  # noqa: E731
        if self.engine == "vpu":  # the filter stays in VMEM; steps over rows, then over taps
            return (cdiv(self.Mp, self.tm), 1, cdiv(self.taps, self.tk))
        return (cdiv(self.Mp, self.tm), cdiv(self.Np, self.tn), self.taps * cdiv(self.Kp, self.tk))

    @property
    def useful_flops(self) -> int:
        return 2 * self.batch * self.M * self.K * self.N * self.taps

    @property
    def issued_flops(self) -> int:
        """MXU work including padding to the array size and extra precision passes."""
        if self.engine == "vpu":
            return self.useful_flops
        return 2 * self.batch * self.Mp * self.Kp * self.Np * self.taps * self.passes


@dataclass(frozen=True)
class HbmPressure:
    """What the device model says of one kernel's HBM stream, for a memory-space pass."""

    excess_s: float  # seconds the HBM stream outlasts the kernel's compute (0: compute-bound)
    per_byte_s: float  # seconds per byte the kernel streams
    idle_bytes: float  # bytes async copies could move in the HBM time the kernel leaves idle


@dataclass
class Kernel:
    name: str
    kind: KernelKind
    op: Op  # the (fusion) op this kernel executes
    inputs: list[Value]
    outputs: list[Value]
    grid: tuple[int, ...]
    grid_axes: tuple[str, ...]
    block_specs: list[BlockSpec]
    steps: list[Step]
    counts: Counts
    hbm_bytes: int  # HBM traffic of the whole kernel, re-reads from tiling included
    where: str = ""
    mxu: MxuPlan | None = None
    bodies: dict[str, "Program"] = field(default_factory=dict)
    # Whether the compiler partitions the kernel over a megacore chip's TensorCores (XLA does
    # for fusions, not for a lone unfused instruction).
    megacore: bool = True
    # Bytes this kernel moves per value (value id -> reads, re-reads included, or writes): what
    # a memory-space pass (compiler/cmem.py) takes off HBM when it places a value on chip.
    traffic: dict[int, int] = field(default_factory=dict)
    cmem_read_bytes: int = 0  # traffic to values placed in v4's CMEM (not counted in hbm_bytes)
    cmem_write_bytes: int = 0
    # HBM bytes of async copies (prefetches into CMEM, evictions out of it) that run while this
    # kernel computes, in HBM time it leaves idle: counted in HBM totals, not in its time.
    async_copy_bytes: int = 0
    cache: dict[str, Any] = field(default_factory=dict, repr=False)  # interpreter caches

    @property
    def fused(self) -> Graph | None:
        return self.op.subgraphs.get("fused")

    @property
    def anchor(self) -> Op | None:
        """The matmul or conv a fused MXU kernel is built around."""
        return self.op.anchor if isinstance(self.op, Fusion) else None

    def describe(self) -> str:
        grid = "x".join(str(g) for g in self.grid) or "1"
        lines = [f"{self.name} [{self.kind}] grid {grid} ({', '.join(self.grid_axes) or '-'})"]
        if self.mxu is not None:
            p = self.mxu
            lines.append(
                f"  mxu {p.precision} x{p.passes}: batch {p.batch} M {p.M}->{p.Mp} K {p.K}->{p.Kp} "
                f"N {p.N}->{p.Np} taps {p.taps}; block tm {p.tm} tk {p.tk} tn {p.tn}; VMEM {p.vmem_bytes / 2**20:.2f} MiB"
            )
        lines += [f"  {b}" for b in self.block_specs]
        lines += [f"  step {s.unit}: {s.what}" for s in self.steps]
        if self.fused is not None:
            lines.append("  fused: " + ", ".join(op.prim for op in self.fused.ops))
        for name, body in self.bodies.items():
            lines.append(f"  [{name}]")
            lines += ["    " + ln for ln in body.describe().splitlines()]
        return "\n".join(lines)


@dataclass
class Allocation:
    value: Value
    offset: int
    size: int
    start: int  # first kernel index where the buffer is live
    end: int  # last kernel index where it is live


@dataclass(frozen=True)
class AttentionRegion:
    """Kernels that one fused (flash) attention kernel runs, linked by score blocks that never
    leave the chip, and the work its mask leaves: for each block of query rows, the blocks of
    keys holding any unmasked score (a causal mask skips the blocks above the diagonal)."""

    kernels: tuple[int, ...]  # indices into the program's kernels, first to last
    matrices: int  # score matrices (batch x heads)
    live: tuple[float, ...]  # per query block: key blocks it visits (mean over the matrices)
    key_blocks: int
    block: int  # query/key rows per block
    backward: bool = False  # the region holds the gradient too (a flash backward recomputes the scores)

    @property
    def live_fraction(self) -> float:
        return sum(self.live) / (len(self.live) * self.key_blocks) if self.live and self.key_blocks else 1.0


@dataclass
class Program:
    kernels: list[Kernel]
    inputs: list[Value]
    outputs: list[Value]
    params: list[Value]
    donated: set[int] = field(default_factory=set)  # ids of inputs whose buffers the caller gives up
    peak_hbm_bytes: int = 0  # heap size after placement (fragmentation included)
    peak_live_bytes: int = 0  # max over time of the sum of live buffers
    allocations: list[Allocation] = field(default_factory=list)
    remat: Any = None  # compiler.remat.Remat when buffers were rematerialized to fit HBM
    on_chip: set[int] = field(default_factory=set)  # value ids kept on chip: no HBM buffer
    attention: list[AttentionRegion] = field(default_factory=list)  # fused attention kernels

    def describe(self) -> str:
        return "\n".join(k.describe() for k in self.kernels)

    def all_kernels(self):
        for k in self.kernels:
            yield k
            for body in k.bodies.values():
                yield from body.all_kernels()
