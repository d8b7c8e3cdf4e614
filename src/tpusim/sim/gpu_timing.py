"""The GPU model: how long each kernel of a compiled Program takes on one GPU, and why.

A GEMM or convolution (XLA:GPU hands it to cuBLAS/cuDNN or a Triton kernel) is cut into output
tiles of BM x BN; each thread block (CTA) computes one tile on one SM, and the tiles run in
waves over the SMs. A GEMM with 8 tiles on 132 SMs uses 8 of them: wave quantization.

    waves      = ceil(batch x ceil(M / BM) x ceil(N / BN) / SMs)
    tensor_s   = waves x (2 BM BN K / (peak(dtype) x efficiency / SMs) + wave_latency x width / 2)
    time       = kernel_floor + max(tensor_s, hbm_bytes / (bandwidth x hbm_efficiency))

The tile is the one of the usual CUTLASS/cuBLAS shapes that finishes first, as XLA's autotuner
picks the fastest kernel. The tensor-core rate follows the operand type: bf16/f16 at the bf16
peak; f32 at default precision as TF32 (JAX's default on Ampere and later; f32 on CUDA cores
where the GPU has no TF32, and at precision "highest"); fp8 and int8 at their own published peaks.
A fused (flash) attention region is one kernel: a CTA per query block sweeps the key blocks the
mask leaves (a causal mask about half), the CTAs dispatched in launch order over the SMs, the
softmax on the CUDA cores partly under the tensor-core work (`time_attention`).
Depthwise convolutions (cuDNN's depthwise kernels) run on the CUDA cores, one FMA per MAC,
and are memory-bound in practice. Other kernels (XLA's loop and reduction fusions) stream HBM at the calibrated bandwidth, with
their arithmetic on the CUDA cores (transcendentals on the special-function units).

Per architecture, four constants are fitted on stated subsets of XLA:GPU's own measured GEMM
tables (sim/calibration.yaml, `tpusim validate`): the kernel floor, the per-wave latency, the
sustained tensor-core fraction, and the sustained TF32 fraction. Two more are fitted on the
H100 kernels this project timed (benchmarks/gpu_measure.py): the fixed time of a non-GEMM
kernel, the HBM fraction a streaming loop fusion sustains, and how much of a flash attention
kernel's softmax hides under its products.
"""

from __future__ import annotations

import heapq
import math

from tpusim.compiler.fusion import FusionRules
from tpusim.program.program import AttentionRegion, Kernel, MxuPlan
from tpusim.sim.device_timer import Bound, DeviceTimer, KernelTime

# Output tiles (BM, BN) of the GEMM kernels cuBLAS and XLA's Triton emitter choose among.
GEMM_TILES: tuple[tuple[int, int], ...] = ((256, 128), (128, 256), (128, 128), (128, 64), (64, 128), (64, 64))

# Special-function-unit cost of a transcendental in CUDA-core slots: 16 SFU results per SM per
# clock against 128 FP32 lanes (CUDA C++ Programming Guide, arithmetic instruction throughput,
# compute capability 8.x/9.0).
SFU_COST = 8.0


# The largest thread block's register file: 64K 32-bit registers (CUDA C++ Programming Guide,
# technical specifications per compute capability, 5.0 to 9.0). XLA:GPU's Triton cost model
# keeps a tile only in 40% of it (`DoesTileFitsInRegisters` in XLA's
# gpu_indexing_performance_model.cc): a longer normalization row is not one Triton kernel.
REGISTERS_PER_BLOCK = 65536
TILE_REGISTER_SHARE = 0.4

# XLA:GPU's kernels: a GEMM is a cuBLAS(Lt) call whose epilogue scales, adds a bias or an
# addend, applies an activation and converts its result (XLA's gemm rewriter folds those in);
# a row normalization whose rows fit the registers is one Triton kernel (its softmax rewriter).
XLA_GPU = FusionRules(
    epilogue_prims=frozenset({"convert_element_type", "add", "sub", "mul", "div", "max", "neg",
                              "integer_pow", "tanh", "logistic", "erf", "broadcast_in_dim",
                              "reshape", "squeeze", "transpose"}),
    operand_prologues=False,
    row_elements=int(TILE_REGISTER_SHARE * REGISTERS_PER_BLOCK),
)


class GpuTimer(DeviceTimer):
    """Prices kernels on one GPU: tensor-core GEMMs in waves of tiles over the SMs, everything
    else as an HBM stream with CUDA-core arithmetic."""

    matrix_unit = "tensor cores"
    vector_unit = "CUDA cores"
    fusion_rules = XLA_GPU

    @property
    def sms(self) -> int:
        return int(self.chip.sm_count.value) if self.chip.sm_count else 1

    @property
    def cuda_core_ops_per_s(self) -> float:
        """Elementwise operations per second on the CUDA cores (an FMA counts 2 FLOPs in the
        published FP32 peak, one operation here)."""
        fp32 = self.chip.peak_fp32_tflops
        return (fp32.value * 1e12 if fp32 else self.peak_flops / 16) / 2

    def tensor_rate(self, plan: MxuPlan) -> tuple[float, str]:
        """(sustained FLOP/s, which published peak) for the kernel's operand type."""
        chip, cal = self.chip, self.cal
        op = plan.operand_type
        if op in ("int8", "fp8"):
            rel, label = chip.matmul_rate(op)
            return self.peak_flops * rel * cal.mxu_efficiency, label
        if op == "f32":
            if plan.passes < 6 and chip.peak_tf32_tflops is not None:
                return chip.peak_tf32_tflops.value * 1e12 * (cal.tf32_efficiency or cal.mxu_efficiency), "tf32 peak"
            fp32 = chip.peak_fp32_tflops.value * 1e12 if chip.peak_fp32_tflops else self.peak_flops / 16
            return fp32 * cal.mxu_efficiency, "fp32 peak (CUDA cores)"
        if op == "int":
            return self.cuda_core_ops_per_s * 2, "int32 (CUDA cores)"
        return self.peak_flops * cal.mxu_efficiency, "bf16 peak"

    def gemm_seconds(self, plan: MxuPlan) -> tuple[float, tuple[int, int], int]:
        """(tensor-core time, tile, waves) of the fastest tile for this GEMM/conv."""
        rate, _ = self.tensor_rate(plan)
        per_sm = rate / self.sms
        k = plan.K * plan.taps
        # A CTA's prologue loads its first operand stages and its epilogue stores its tile: both
        # scale with the element width, at least 2 bytes (8-bit GEMMs store 16-bit results);
        # the constant is fitted on bf16.
        latency = self._wave_latency(plan)
        best: tuple[float, tuple[int, int], int] | None = None
        for bm, bn in GEMM_TILES:
            tiles = plan.batch * math.ceil(plan.M / bm) * math.ceil(plan.N / bn)
            waves = math.ceil(tiles / self.sms)
            t = waves * (2 * bm * bn * k / per_sm + latency)
            if best is None or t < best[0]:
                best = (t, (bm, bn), waves)
        assert best is not None
        return best

    def _wave_latency(self, plan: MxuPlan) -> float:
        width = 4 if plan.operand_type in ("f32", "int") else 2
        return self.cal.wave_latency_s * width / 2

    def time_attention(self, region: AttentionRegion, kernels: list[Kernel], parts: list[KernelTime]) -> KernelTime | None:
        """A flash attention kernel (cuDNN's, FlashAttention's): one CTA per block of query rows
        of one score matrix sweeps the key blocks its mask leaves, both products on the tensor
        cores with the scores in registers, so no GEMM stores a tile of scores and a causal
        mask halves the work. The CTAs' unequal lengths are dispatched in launch order over the SMs.
        The softmax (exp on the special-function units) runs on the CUDA cores beside the tensor
        cores; `attention_overlap` says how much of the shorter of the two hides under the longer."""
        products = [(k.mxu, p) for k, p in zip(kernels, parts) if k.mxu is not None and k.mxu.engine == "mxu"]
        mxu_flops = sum(p.mxu_flops for p in parts)
        if not products or not mxu_flops:
            return None
        plan, scores = products[0]  # Q K^T
        if region.backward:
            # The forward kernel computes S = Q K^T and O = P V (and the softmax statistics the
            # backward needs) whether or not O is used; the backward kernel computes S again
            # and then dV, dP, dQ and dK (FlashAttention-2, Algorithm 2): seven score-sized products.
            mxu_flops = 7 * scores.mxu_flops
        per_sm = self.tensor_rate(plan)[0] / self.sms
        pair_s = mxu_flops / (region.matrices * len(region.live) * region.key_blocks) / per_sm
        tensor_s = _launch_order(region.live, region.matrices, pair_s, self._wave_latency(plan), self.sms)
        vector_s = sum(p.vpu_s for p in parts) * region.live_fraction
        # Each operand and result crosses HBM once (a CTA's re-reads of K and V hit in L2).
        moved = {v.id: v.nbytes for k in kernels for v in [*k.inputs, *k.outputs] if v.id in k.traffic}
        dma_s = self.dma_seconds(sum(moved.values()))
        steady = max(tensor_s, vector_s, dma_s) + (1 - self.cal.attention_overlap) * min(tensor_s, vector_s)
        engines: dict[Bound, float] = {"compute": tensor_s, "vector": vector_s, "memory": dma_s}
        first, live = parts[0], region.live_fraction
        return KernelTime(first.name, "attention", self.cal.kernel_floor_s + steady, sum(p.flops for p in parts) * live,
                          float(sum(moved.values())), max(engines, key=engines.__getitem__), tensor_s, vector_s, dma_s,
                          self.cal.kernel_floor_s, mxu_flops=mxu_flops * live, where=first.where, rate=first.rate)

    def matmul_seconds(self, plan: MxuPlan, hbm_bytes: float, megacore: bool = True) -> float:
        """The GEMM's time as timed below: its own best tile over the SMs, or its HBM stream."""
        if plan.engine != "mxu":
            return self.cal.kernel_floor_s + self.dma_seconds(hbm_bytes)
        return self.cal.kernel_floor_s + max(self.gemm_seconds(plan)[0], self.dma_seconds(hbm_bytes))

    def time_compute_kernel(self, kernel: Kernel) -> KernelTime:
        c = kernel.counts
        tensor_s, rate, mxu_flops = 0.0, "", 0.0
        vector_flops = c.flops
        if kernel.mxu is not None and kernel.mxu.engine == "mxu":  # depthwise convs: CUDA cores (cuDNN)
            tensor_s, _, _ = self.gemm_seconds(kernel.mxu)
            rate = self.tensor_rate(kernel.mxu)[1]
            mxu_flops = float(kernel.mxu.useful_flops)
            vector_flops = max(0.0, c.flops - mxu_flops)
        if kernel.mxu is not None and kernel.mxu.engine == "vpu":  # a depthwise MAC is one FMA
            vector_flops = max(0.0, c.flops - kernel.mxu.useful_flops / 2)
        vector_s = (vector_flops + SFU_COST * c.transcendentals) / self.cuda_core_ops_per_s
        dma_s = self.dma_seconds(kernel.hbm_bytes)
        steady = max(tensor_s, vector_s, dma_s)
        floor = self.cal.kernel_floor_s if mxu_flops or not self.cal.loop_floor_s else self.cal.loop_floor_s
        bound: Bound
        if floor > steady:
            bound = "overhead"
        elif steady == tensor_s:
            bound = "compute"
        elif steady == dma_s:
            bound = "memory"
        else:
            bound = "vector"
        return KernelTime(kernel.name, kernel.kind, floor + steady, c.flops, float(kernel.hbm_bytes), bound,
                          tensor_s, vector_s, dma_s, floor, mxu_flops=mxu_flops, where=kernel.where, rate=rate)


def _launch_order(live: tuple[float, ...], matrices: int, block_s: float, cta_s: float, sms: int) -> float:
    """Finish time of the CTAs, one per query block per matrix (`live` key blocks of `block_s`
    each, plus a fixed `cta_s`), dispatched in launch order — query block fastest, as
    FlashAttention-2's grid (m_block = blockIdx.x) — each to the SM that frees first. A causal
    kernel's long last blocks then finish after the short ones have drained."""
    work = [blocks * block_s + cta_s for blocks in live]
    if matrices * len(work) > _MAX_SCHEDULED_CTAS:  # many waves: the tail is a small share
        return (matrices * sum(work) / sms) + max(work)
    free = [0.0] * sms
    for _ in range(matrices):
        for w in work:
            heapq.heapreplace(free, free[0] + w)
    return max(free)


_MAX_SCHEDULED_CTAS = 200_000
