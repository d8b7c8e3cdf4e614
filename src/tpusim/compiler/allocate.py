"""HBM allocation by liveness.

Every buffer (inputs, parameters, kernel results) is live from the kernel that writes it to the
last kernel that reads it; parameters and inputs live throughout, outputs to the end. A donated
input (jax.jit's `donate_argnums`; Keras donates its training state) is the caller's no more:
it lives only to its last read, so its space serves later buffers as XLA's input/output aliasing
lets the updated state reuse it. Buffers
are placed greedily, largest first, at the lowest offset that no time-overlapping buffer uses
(like XLA's heap simulator). The heap size is the peak HBM; the sum of live buffers at the worst
kernel is reported beside it (their difference is fragmentation).
"""

from __future__ import annotations

from tpusim.compiler.layout import padded_bytes
from tpusim.errors import OutOfMemoryError
from tpusim.ir.graph import Value
from tpusim.ir.primitives import PRIMITIVES
from tpusim.program.program import Allocation, Kernel, Program

ALIGN = 512  # bytes; HBM buffers are aligned to whole tiles


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


_ROLE_LABEL = {"input": "input", "param": "parameter", "literal": "constant", "temp": "intermediate"}
_CATEGORY_LABEL = {"activation": "activation saved for the backward pass", "gradient": "gradient / backward temporary"}


def buffer_label(v: Value) -> str:
    kind = _CATEGORY_LABEL.get(v.category) or _ROLE_LABEL.get(v.role, v.role)
    return f"{kind} {v.name} {v.dtype.name}{list(v.shape)}"


_INPUT_GROUPS = {"parameters": "parameters", "optimizer_state": "optimizer state", "non_trainable": "non-trainable state",
                 "metrics": "metric state"}


def buffer_bucket(v: Value) -> str:
    """Which kind of memory a buffer is, for OOM reports: parameters, optimizer state,
    activations saved for the backward pass, gradients, inputs, other intermediates."""
    if v.category == "activation":
        return "activations"
    if v.category == "gradient":
        return "gradients and backward temporaries"
    if v.role == "param":
        return "parameters"
    if v.role == "input":
        return _INPUT_GROUPS.get(v.name.split("[")[0], "inputs")
    return "other intermediates"


def liveness(program: Program) -> list[Allocation]:
    """Live ranges (kernel index intervals) and sizes of every HBM buffer, not yet placed."""
    n = max(1, len(program.kernels))
    last = n - 1
    allocs: dict[int, Allocation] = {}

    def add(v: Value, start: int, end: int) -> None:
        if (v.is_const and v.size <= 1) or v.id in program.on_chip or v.memory == "host":
            return  # immediates live in the instruction stream; on-chip values in VMEM / the UB; offloaded ones on the host
        size = _align(padded_bytes(v.shape, v.dtype))
        if v.id in allocs:
            a = allocs[v.id]
            a.start, a.end = min(a.start, start), max(a.end, end)
        else:
            allocs[v.id] = Allocation(v, 0, size, start, end)

    for v in list(program.inputs) + list(program.params):
        add(v, 0, 0 if v.id in program.donated else last)
    for i, k in enumerate(program.kernels):
        for v in k.outputs:
            add(v, i, i)
        for v in k.inputs:
            if v.id in allocs:
                allocs[v.id].end = max(allocs[v.id].end, i)
            elif v.id not in program.on_chip:
                add(v, 0, last)  # a constant read by this kernel
        scratch = sum(body_temporaries(body) for body in k.bodies.values())
        if scratch:
            tmp = Value((scratch,), "uint8", "temp", name=f"{k.name}/body-temporaries")
            allocs[tmp.id] = Allocation(tmp, 0, _align(scratch), i, i)
    for v in program.outputs:
        if v.id in allocs:
            allocs[v.id].end = last  # a donated input returned as it is stays to the end too
    _update_in_place(program, allocs)
    return list({id(a): a for a in allocs.values()}.values())


def body_temporaries(body: Program) -> int:
    """Peak bytes a loop or branch body needs beyond its operands and results: the values it
    makes and drops within one iteration (a layer's activations, attention scores). The carry
    and the per-iteration slices are the loop's own buffers in the enclosing program, and the
    results are written into them, so neither is counted again here."""
    boundary = {v.id for v in list(body.inputs) + list(body.params) + list(body.outputs)}
    allocs = [a for a in liveness(body) if a.value.id not in boundary]
    return max(live_profile(allocs, len(body.kernels)), default=0)


def _read_in_order(kernel: Kernel) -> list[Value]:
    """The loop kernel's inputs it reads element by element in the order it writes its result
    (through elementwise work, reductions, broadcasts and reshapes; not through a transpose,
    slice, pad or concatenation, which could overwrite an element before it is read)."""
    body = kernel.op.subgraphs.get("fused") if kernel.op is not None else None
    if body is None:
        return []
    reordered = {v.id for op in body.ops for v in op.inputs if not PRIMITIVES[op.prim].reads_in_order}
    return [v for v in kernel.inputs if v.id not in reordered]


def _update_in_place(program: Program, allocs: dict[int, Allocation]) -> None:
    """Buffer sharing as XLA's buffer assignment does it: a scatter or dynamic-update-slice
    writes into its operand's buffer, and a loop kernel writes a result into an operand of the
    same size that dies there and that it reads in the order it writes. The shared buffer lives from the operand's birth to the result's last use. A
    program input stays the caller's unless donated."""
    caller_owned = {v.id for v in list(program.inputs) + list(program.params) if v.id not in program.donated}
    for i, k in enumerate(program.kernels):
        if k.op is None or not k.outputs:
            continue
        if PRIMITIVES[k.op.prim].in_place:
            candidates = list(k.op.inputs[:1])
        elif k.kind == "loop":
            candidates = _read_in_order(k)
        else:
            continue
        for out in k.outputs:
            b = allocs.get(out.id)
            for src in candidates:
                a = allocs.get(src.id)
                if b is None or a is None or a is b or a.end != i or a.size != b.size or src.id in caller_owned:
                    continue
                a.end = b.end
                del allocs[out.id]
                allocs[out.id] = a  # later reads of the result extend the shared buffer
                candidates.remove(src)
                break


def place(allocs: list[Allocation]) -> int:
    """Assign offsets (largest first, lowest free offset). Returns the heap size."""
    placed: list[Allocation] = []
    heap = 0
    for a in sorted(allocs, key=lambda a: (-a.size, a.start)):
        busy = sorted((b.offset, b.offset + b.size) for b in placed if b.start <= a.end and a.start <= b.end)
        offset = 0
        for lo, hi in busy:
            if offset + a.size <= lo:
                break
            offset = max(offset, hi)
        a.offset = offset
        placed.append(a)
        heap = max(heap, offset + a.size)
    return heap


def live_profile(allocs: list[Allocation], n_kernels: int) -> list[int]:
    prof = [0] * max(1, n_kernels)
    for a in allocs:
        for t in range(a.start, a.end + 1):
            prof[t] += a.size
    return prof


def allocate(program: Program, hbm_capacity: int | None = None, device: str = "", rematerialized: int = 0) -> Program:
    """Fill in the program's allocations and peaks; raise OutOfMemoryError if it cannot fit
    (`rematerialized`: bytes compiler.remat already stopped keeping, for the message)."""
    allocs = liveness(program)
    heap = place(allocs)
    prof = live_profile(allocs, len(program.kernels))
    program.allocations = allocs
    program.peak_hbm_bytes = heap
    program.peak_live_bytes = max(prof) if prof else 0
    if hbm_capacity is not None and heap > hbm_capacity:
        t = prof.index(max(prof))
        live = sorted((a for a in allocs if a.start <= t <= a.end), key=lambda a: -a.size)
        buckets: dict[str, int] = {}
        for a in live:
            buckets[buffer_bucket(a.value)] = buckets.get(buffer_bucket(a.value), 0) + a.size
        raise OutOfMemoryError(device, heap, hbm_capacity, [(buffer_label(a.value), a.size) for a in live[:5]],
                               sorted(buckets.items(), key=lambda kv: -kv[1]), rematerialized)
    return program


def kernel_at_peak(program: Program) -> Kernel | None:
    prof = live_profile(program.allocations, len(program.kernels))
    return program.kernels[prof.index(max(prof))] if program.kernels else None
