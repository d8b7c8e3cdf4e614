"""The public entry point: tpusim.compile(...) -> Compiled, with stages you can stop between
(traced jaxpr, IR graph, fused graph, Program) and `run` for real outputs."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from tpusim.compiler import allocate, emit_program
from tpusim.compiler.allocate import kernel_at_peak
from tpusim.compiler.attention import score_shapes
from tpusim.compiler.cmem import assign_cmem
from tpusim.compiler.pipeline import graph_passes, record, run_graph_passes
from tpusim.compiler.precision import USER_PRECISIONS
from tpusim.compiler.remat import rematerialize
from tpusim.compiler.tiling import DEFAULT_VMEM_FRACTION
from tpusim.errors import InputMismatchError, ShardingError, TpusimError, UnknownDeviceError
from tpusim.frontend import lower, trace
from tpusim.frontend.trace import Traced as TracedJaxpr
from tpusim.hardware.chip import Chip
from tpusim.hardware.chip import resolve_device as resolve_chip
from tpusim.ir.counts import Counts, graph_counts
from tpusim.ir.graph import Graph, next_id, numbering
from tpusim.program.program import Program
from tpusim.sim.estimate import Estimate, estimate_program, timer_for
from tpusim.sim.device_timer import DEFAULT_CONSTANTS, TimingConstants
from tpusim.sim.numerics import _to_numpy, run_program
from tpusim.sim.staged import run_staged, stage_spmd

if TYPE_CHECKING:
    from tpusim.report.html_report import Report


@dataclass
class Distribution:
    """How a program is spread over a slice: the system, the mesh, and the per-device sharding."""

    system: Any  # tpusim.distribute.topology.System
    mesh: Any  # tpusim.distribute.mesh.Mesh
    sharded: Any  # tpusim.compiler.shard.ShardedGraph
    default_mesh: bool = False  # no mesh was given: one data-parallel axis over every device

    @property
    def devices(self) -> int:
        return self.mesh.devices


@dataclass(frozen=True)
class MemoryAnalysis:
    """One device's HBM as jax's `compiled.memory_analysis()` reports it: arguments (weights and
    inputs), outputs not aliased to an argument, donated arguments whose buffers are reused,
    temporaries, and the peak of them all together (placement included)."""

    argument_size_in_bytes: int
    output_size_in_bytes: int
    alias_size_in_bytes: int
    temp_size_in_bytes: int
    peak_memory_in_bytes: int


@dataclass
class Compiled:
    """A model compiled for one chip (or, with `distribution`, for each device of a slice):
    inspect every stage, run it, count it, estimate it."""

    name: str
    chip: Chip
    precision: str
    traced: TracedJaxpr
    graph: Graph  # IR after canonicalization and precision assignment
    fused: Graph  # IR after fusion
    program: Program
    compile_seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    distribution: Distribution | None = None
    after_pass: dict[str, Graph] = field(default_factory=dict, repr=False)  # the IR after each named pass
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        kinds: dict[str, int] = {}
        for k in self.program.kernels:
            kinds[k.kind] = kinds.get(k.kind, 0) + 1
        where = self.distribution.system.name if self.distribution is not None else self.chip.name
        return (f"Compiled({self.name} for {where}: {len(self.program.kernels)} kernels "
                f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))}), "
                f"peak HBM {self.program.peak_hbm_bytes / 2**20:.1f} MiB, precision {self.precision})")

    def _repr_html_(self) -> str:
        """Notebooks: the summary and the estimate."""
        return f"<p><code>{_escape(repr(self))}</code></p>" + self.estimate()._repr_html_()

    # ---- running ---------------------------------------------------------------------------
    def run(self, *args: Any, strict: bool = False) -> Any:
        """Execute the compiled program; outputs are NumPy arrays in the function's structure.
        The program runs as one staged JAX function, compiled by XLA on the first call and
        reused. `strict=True` interprets it kernel by kernel instead, walking every MXU grid
        step separately (slower, same arithmetic)."""
        arrays = self._flat_arguments(args)
        if self.distribution is not None:
            outs = self._run_sharded(arrays, strict)
        elif strict:
            outs = run_program(self.program, arrays, strict)
        else:  # one staged JAX function, compiled on the first run and kept
            outs = run_staged(self.program, arrays, self._cache)
        return jax.tree.unflatten(self.traced.out_tree, outs)

    def _flat_arguments(self, args: tuple) -> list[Any]:
        """The call's arguments as one array per program input, checked against the example
        they were compiled for (shape, kind of dtype, structure)."""
        flat, tree = jax.tree.flatten(args)
        if tree != self.traced.in_tree:
            raise InputMismatchError(f"{self.name} was compiled for arguments structured as {self.traced.in_tree}, got {tree}")
        arrays = []
        for i, (x, spec) in enumerate(zip(flat, self.traced.in_avals)):
            if jax.dtypes.issubdtype(spec.dtype, jax.dtypes.prng_key):
                # a typed PRNG key (jax.random.key, flax.nnx's Rngs) stays a JAX key array:
                # the random primitives that read it take nothing else
                if getattr(x, "dtype", None) != spec.dtype or tuple(x.shape) != tuple(spec.shape):
                    raise InputMismatchError(f"argument {i} must be a PRNG key array of shape {tuple(spec.shape)} "
                                             f"and type {spec.dtype}, as compiled; got {getattr(x, 'dtype', type(x))}")
                arrays.append(x)
                continue
            arr = np.asarray(x)
            if tuple(arr.shape) != tuple(spec.shape):
                raise InputMismatchError(
                    f"argument {i} has shape {tuple(arr.shape)} but {self.name} was compiled for {tuple(spec.shape)}; "
                    "compile again with an example of the new shape")
            if not isinstance(x, (bool, int, float)) and _kind(arr.dtype) != _kind(spec.dtype):
                raise InputMismatchError(
                    f"argument {i} is {arr.dtype} but {self.name} was compiled for {np.dtype(spec.dtype)}; pass "
                    f"{_kind(spec.dtype)} data (a different width, such as float64 for float32, is converted as JAX "
                    "does) or compile again with an example of this type")
            arrays.append(arr.astype(spec.dtype, copy=False))
        return arrays

    def _run_sharded(self, arrays: list[np.ndarray], strict: bool) -> list[np.ndarray]:
        from tpusim.compiler.shard import device_coords, local_block
        from tpusim.sim.spmd import assemble, run_spmd

        dist = self.distribution
        assert dist is not None
        axes = dist.sharded.mesh_axes
        n = dist.devices
        if n > 64:
            raise TpusimError(f"running numerics on {n} simulated devices is not supported (at most 64); "
                              "use estimate() for large slices, or a smaller mesh for numerics")
        per_device = [[local_block(a, sh, device_coords(d, axes), axes) for a, sh in zip(arrays, dist.sharded.in_shardings)]
                      for d in range(n)]
        if strict:
            outs = run_spmd(self.program, axes, per_device, strict)
        else:  # one staged function over every device at once
            if "staged_spmd" not in self._cache:
                self._cache["staged_spmd"] = stage_spmd(self.program, axes)
            stacked = self._cache["staged_spmd"](*[jnp.stack([args[i] for args in per_device]) for i in range(len(arrays))])
            outs = [[_to_numpy(s[d]) for s in stacked] for d in range(n)]
        return [assemble([o[i] for o in outs], sh, axes) for i, sh in enumerate(dist.sharded.out_shardings)]

    # ---- counting --------------------------------------------------------------------------
    def counts(self) -> Counts:
        """Counts from the IR (before fusion): FLOPs, XLA-convention FLOPs, transcendentals, bytes."""
        return graph_counts(self.graph)

    @property
    def flops(self) -> float:
        return self.counts().flops

    @property
    def hbm_bytes(self) -> int:
        """HBM traffic of the fused program (tiling re-reads included)."""
        return int(sum(k.hbm_bytes for k in self.program.kernels))

    @property
    def peak_hbm_bytes(self) -> int:
        return self.program.peak_hbm_bytes

    @property
    def kernels(self):
        return self.program.kernels

    def cost_analysis(self) -> dict[str, float]:
        """Like jax's compiled.cost_analysis(), from tpusim's own counts."""
        c = self.counts()
        return {"flops": c.flops, "flops_xla_convention": c.flops_xla, "transcendentals": c.transcendentals,
                "bytes accessed": float(self.hbm_bytes), "bytes accessed unfused": c.bytes,
                "peak hbm bytes": float(self.peak_hbm_bytes)}

    def memory_analysis(self) -> MemoryAnalysis:
        """Like jax's compiled.memory_analysis(): one device's HBM, from tpusim's buffer
        assignment (liveness, donation, in-place updates, placement)."""
        program = self.program
        size = {a.value.id: a.size for a in program.allocations}
        arguments = [v for v in [*program.inputs, *program.params] if v.id in size]
        argument_bytes = sum(size[v.id] for v in {v.id: v for v in arguments}.values())
        argument_ids = {v.id for v in arguments}
        outputs = {v.id: v for v in program.outputs if v.id in size}
        output_bytes = sum(size[i] for i in outputs if i not in argument_ids)
        alias_bytes = sum(size[v.id] for v in program.inputs if v.id in program.donated and v.id in size)
        peak = program.peak_hbm_bytes
        return MemoryAnalysis(argument_bytes, output_bytes, alias_bytes,
                              max(0, peak - argument_bytes - output_bytes + alias_bytes), peak)

    # ---- timing ----------------------------------------------------------------------------
    def estimate(self, constants: TimingConstants | None = None, calibration: Any = None) -> "Estimate":
        """How long one call takes on the chip, per kernel and in total (deterministic).
        `constants` / `calibration` (a sim.calibration.Calibration) replace the calibrated
        timing constants, as `tpusim validate --refit` tries them; only the default estimate is
        kept."""
        default = constants is None and calibration is None
        if default and "estimate" in self._cache:
            return self._cache["estimate"]
        mesh = self.distribution.mesh if self.distribution is not None else None
        flops = self.counts().flops  # per device: a sharded graph is already one device's share
        est = estimate_program(self.program, self.chip, flops, constants or DEFAULT_CONSTANTS, mesh=mesh,
                               calibration=calibration)
        if self.distribution is not None:  # say which slice and mesh, never just the chip
            system = self.distribution.system
            shape = " x ".join(f"{k} {v}" for k, v in self.distribution.mesh.shape.items())
            kind = "default data-parallel mesh" if self.distribution.default_mesh else "mesh"
            est.device = f"{system.name or system.slice.name} ({kind} {shape}; per device)"
        if default:
            self._cache["estimate"] = est
        return est

    # ---- reporting -------------------------------------------------------------------------
    def report(self, path: str | Path | None = None, *example_args: Any, comparison: Any = None) -> "Report":
        """A self-contained HTML report (overview, op profile, timeline, roofline, memory viewer,
        compiled stages, collectives, and views of the MXU at work on this model); written to
        `path` when given, shown inline in a notebook. `example_args` (as for `run`) give the
        MXU views real activations; without them they use seeded random-normal inputs.
        `comparison`: a `tpusim.compare(...)` result for the compare page."""
        from tpusim.report.html_report import build_report

        inputs = self._flat_arguments(example_args) if example_args else None
        if inputs is not None and self.distribution is not None:
            inputs = None  # the views show one device's program; its inputs are per-device blocks
        return build_report(self, path, inputs, comparison)

    # ---- printing --------------------------------------------------------------------------
    def as_text(self, stage: str = "program") -> str:
        """'jaxpr'; the IR after a named pass ('lowered', 'shard' on a slice, 'canonicalize',
        'assign_precision', 'fuse', 'rematerialize' when it ran; 'ir': after precision, 'fused':
        the final fused graph); or 'program'."""
        if stage == "jaxpr":
            return str(self.traced.closed_jaxpr)
        if stage == "program":
            return self.program.describe()
        fused = "rematerialize" if "rematerialize" in self.after_pass else "fuse"
        graph = self.after_pass.get({"ir": "assign_precision", "fused": fused}.get(stage, stage))
        if graph is None:
            names = ", ".join(f"'{n}'" for n in ("jaxpr", *self.after_pass, "program"))
            raise TpusimError(f"unknown stage '{stage}': use one of {names}")
        return graph.pretty()


def resolve_device(device: str | Path | Chip) -> Chip:
    """The Chip a device argument names: a catalog name or alias, a chip file, a Chip, or a
    slice or multislice name ("v4-32", "2xv5e-256"), which resolves to the chip it is made of."""
    try:
        return resolve_chip(device)
    except UnknownDeviceError:
        from tpusim.distribute import parse_system

        system = parse_system(str(device))  # a wrong slice size says which sizes exist
        if system is None:
            raise
        return system.chip


def compile(
    fn_or_model: Any,
    *example_args: Any,
    device: str | Path | Chip = "v5e",
    precision: str = "default",
    vmem_fraction: float = DEFAULT_VMEM_FRACTION,
    check_memory: bool = True,
    tiles: tuple[int, int, int] | None = None,
    mesh: Any = None,
    in_specs: Any = None,
    donate_argnums: int | tuple[int, ...] = (),
    attention: str = "auto",
) -> Compiled:
    """Compile a JAX function or Keras 3 model for a simulated chip: the one-call shortcut for
    `tpusim.jit(fn, donate_argnums=...).lower(*example_args).compile(device=..., ...)`.

    Example args may be arrays or jax.ShapeDtypeStruct (no data needed). `precision` is
    'default' (bf16 MXU inputs, f32 accumulation), 'high' (3 bf16 passes) or 'highest'
    (6 bf16 passes, ~f32). `tiles=(tm, tk, tn)` forces the MXU block shape of every matmul
    and convolution (as a hand-tuned Pallas kernel would); by default the compiler picks it.
    `attention` prices softmax(Q K^T) V as the fused flash/splash kernel TPU stacks run ("flash":
    the T x T scores never reach HBM), as XLA compiles the plain ops ("xla"), or "auto" (flash
    on TPUs, xla elsewhere); outputs are the same either way.

    Many chips: `device` may name a slice ("v4-32", "v5e-16", "2xv5e-256"); `mesh` names its
    axes ({"data": 8, "model": 2}, or a jax.sharding.Mesh/AbstractMesh; default one "data" axis
    over every device) and `in_specs`
    gives a jax.sharding.PartitionSpec (or None: replicated) per argument, or a pytree of them.
    The SPMD pass splits the program per device and inserts the collectives.

    `donate_argnums` as in jax.jit: those arguments' buffers are given up to the program, so
    their HBM is reused once they are last read (a training step donating its state holds one
    copy of it, not two).
    """
    options = _CompileOptions.checked(precision, vmem_fraction, attention)
    system, chip, axes = _target(device, mesh)
    lowered = jit(fn_or_model, donate_argnums=donate_argnums).lower(*example_args, mesh=axes, _default_mesh=not mesh)
    return lowered._compile(system, chip, axes, not mesh, options, check_memory, tiles, in_specs)


def jit(fn_or_model: Any, *, donate_argnums: int | tuple[int, ...] = ()) -> "Jitted":
    """Stages, as `jax.jit(f).trace(*args).lower()` gives them: trace and lower once, with no
    device chosen, then compile the one `Lowered` for each device to compare (only the
    device-dependent passes run again)."""
    return Jitted(fn_or_model, donate_argnums)


@dataclass(frozen=True)
class Jitted:
    """A function (or Keras model) waiting for example arguments: `trace` or `lower` them."""

    fn: Any
    donate_argnums: int | tuple[int, ...] = ()

    def trace(self, *example_args: Any, mesh: Any = None, _default_mesh: bool = False) -> "Traced":
        """The function's jaxpr for these argument shapes. `mesh` (axis sizes, or a
        jax.sharding.Mesh) is needed only by a function that names mesh axes itself
        (with_sharding_constraint, a shard_map without its own mesh)."""
        donated = _donated_leaves(self.donate_argnums, example_args)
        axes = _axes(mesh)
        t0 = time.perf_counter()
        jaxpr = trace(self.fn, *example_args, mesh_axes=axes, mesh_is_default=_default_mesh)
        return Traced(self, example_args, jaxpr, axes, _default_mesh, donated, {"trace": time.perf_counter() - t0})

    def lower(self, *example_args: Any, mesh: Any = None, _default_mesh: bool = False) -> "Lowered":
        return self.trace(*example_args, mesh=mesh, _default_mesh=_default_mesh).lower()


@dataclass
class Traced:
    """A traced function (`jax.stages.Traced`): its jaxpr, before lowering to tpusim's IR."""

    jitted: Jitted
    example_args: tuple
    jaxpr: TracedJaxpr
    mesh_axes: dict[str, int] | None
    default_mesh: bool
    donated: list[int]
    timings: dict[str, float]

    def lower(self) -> "Lowered":
        t0 = time.perf_counter()
        graph = lower(self.jaxpr.closed_jaxpr, self.jaxpr.const_names, self.jaxpr.in_names)
        return Lowered(self, graph, {**self.timings, "lower": time.perf_counter() - t0})

    def as_text(self) -> str:
        return str(self.jaxpr.closed_jaxpr)


@dataclass
class Lowered:
    """A function lowered to tpusim's IR with no device chosen (`jax.stages.Lowered`). Compile
    it for any number of devices: the IR is shared and left unchanged, and each `compile`
    runs only what depends on the device (sharding, precision, fusion, tiling, memory)."""

    traced: Traced
    graph: Graph
    timings: dict[str, float]

    def as_text(self, stage: str = "ir") -> str:
        """'jaxpr' or 'ir'."""
        if stage == "jaxpr":
            return self.traced.as_text()
        if stage == "ir":
            return self.graph.pretty()
        raise TpusimError(f"unknown stage '{stage}' of a Lowered: use 'jaxpr' or 'ir' (compile it for the rest)")

    def cost_analysis(self) -> dict[str, float]:
        """The device-independent counts (before fusion): FLOPs, transcendentals, bytes."""
        c = graph_counts(self.graph)
        return {"flops": c.flops, "flops_xla_convention": c.flops_xla, "transcendentals": c.transcendentals,
                "bytes accessed unfused": c.bytes}

    def compile(self, device: str | Path | Chip = "v5e", *, precision: str = "default",
                vmem_fraction: float = DEFAULT_VMEM_FRACTION, check_memory: bool = True,
                tiles: tuple[int, int, int] | None = None, mesh: Any = None, in_specs: Any = None,
                attention: str = "auto") -> Compiled:
        """Compile for one device (a chip, slice or GPU node); keywords as `tpusim.compile`.
        A slice's mesh differs from the one traced with only if the function named mesh axes:
        then it is traced again under the slice's mesh."""
        options = _CompileOptions.checked(precision, vmem_fraction, attention)
        system, chip, axes = _target(device, mesh)
        lowered = self
        if axes is not None and self.traced.mesh_axes is not None and axes != self.traced.mesh_axes:
            lowered = self.traced.jitted.lower(*self.traced.example_args, mesh=axes, _default_mesh=not mesh)
        return lowered._compile(system, chip, axes, not mesh, options, check_memory, tiles, in_specs)

    def _compile(self, *args: Any) -> Compiled:
        with numbering(next_id(self.graph)):  # the passes' new values and ops follow the lowered ids
            return self._compile_numbered(*args)

    def _compile_numbered(self, system: Any, chip: Chip, axes: dict[str, int] | None, default_mesh: bool,
                          options: "_CompileOptions", check_memory: bool, tiles: tuple[int, int, int] | None,
                          in_specs: Any) -> Compiled:
        t0 = time.perf_counter()
        timings = dict(self.timings)

        def stage(name: str, t: float) -> float:
            now = time.perf_counter()
            timings[name] = now - t
            return now

        traced, graph, t = self.traced, self.graph, t0
        after_pass: dict[str, Graph] = {}
        record(after_pass, "lowered", graph)
        mesh = None if default_mesh else axes
        if not mesh:  # a shard_map names its own mesh: the program runs on it
            mesh = _shard_map_mesh(graph, system, chip)
            if mesh:
                system, axes = system or _single_chip_system(chip), dict(mesh)
        distribution = None
        if system is not None and axes is not None:
            from tpusim.compiler.shard import shard_graph
            from tpusim.distribute.mesh import make_mesh

            mesh_obj = make_mesh(system, axes)
            sharded = shard_graph(graph, axes, _flat_specs(in_specs, traced.example_args, len(graph.inputs)))
            graph = record(after_pass, "shard", sharded.graph)
            distribution = Distribution(system, mesh_obj, sharded, default_mesh=not mesh)
            t = stage("shard", t)
        timer = timer_for(chip)
        fused = run_graph_passes(graph, graph_passes(options.precision, chip.mxu_dtype, timer.fusion_rules), after_pass)
        graph = after_pass["assign_precision"]
        t = stage("fuse", t)
        vmem_budget = int(chip.vmem_bytes * options.vmem_fraction)
        vpu_rate = getattr(timer, "vpu_elems_per_s", None)  # TensorCores only: GPUs keep depthwise on CUDA cores
        vpu_ratio = timer.peak_flops / vpu_rate if vpu_rate and timer.peak_flops else None

        # Attention as TPU stacks run it (flash/splash: the T x T scores stay in VMEM), or as XLA
        # compiles the plain JAX ops (the scores in HBM). "auto": fused on TPUs.
        attention = options.attention
        fused_attention = attention == "flash" or (attention == "auto" and chip.kind == "tpu")
        on_chip_shapes = frozenset(score_shapes(graph)) if fused_attention else frozenset()
        # TPU v1 (an int8 inference chip) keeps activations in its Unified Buffer (half of it: the
        # other half takes the next layer's output) and streams only weights from DDR3.
        on_chip = chip.vmem_bytes // 2 if chip.mxu_dtype == "int8" else 0

        def build(g: Graph) -> Program:
            p = emit_program(g, chip.mxu_shape, vmem_budget, tiles, chip.cores_per_device, vpu_ratio, on_chip,
                             on_chip_shapes, timer.matmul_seconds)
            p.donated = {p.inputs[i].id for i in traced.donated}
            return allocate(p)

        program = build(fused)
        t = stage("tile+emit", t)
        remat = None
        if check_memory and program.peak_hbm_bytes > chip.device_hbm_bytes:
            # XLA compiles against the device's memory: rematerialize before declaring OOM.
            def peak_at(g: Graph) -> tuple[int, int]:
                p = build(g)
                at = kernel_at_peak(p)
                return p.peak_hbm_bytes, p.kernels.index(at) if at is not None else 0

            fused, remat = rematerialize(fused, peak_at, chip.device_hbm_bytes)
            if remat.values:
                program = build(record(after_pass, "rematerialize", fused))
        allocate(program, chip.device_hbm_bytes if check_memory else None, chip.name, remat.bytes if remat else 0)
        program.remat = remat
        if chip.cmem_mib is not None:  # v4: CMEM placements and async copies (timing only)
            assign_cmem(program, int(chip.cmem_mib.value * 2**20), timer.hbm_pressure)
        stage("allocate", t)
        seconds = sum(self.timings.values()) + time.perf_counter() - t0  # tracing and lowering included
        return Compiled(traced.jaxpr.name, chip, options.precision, traced.jaxpr, graph, fused, program, seconds,
                        timings, distribution, after_pass)


@dataclass(frozen=True)
class _CompileOptions:
    precision: str
    vmem_fraction: float
    attention: str

    @classmethod
    def checked(cls, precision: str, vmem_fraction: float, attention: str) -> "_CompileOptions":
        """Options checked before the expensive work."""
        if precision not in USER_PRECISIONS:
            raise TpusimError(f"precision must be one of {', '.join(USER_PRECISIONS)}, got '{precision}'")
        if not 0 < vmem_fraction <= 1:
            raise TpusimError(f"vmem_fraction must be in (0, 1], got {vmem_fraction}")
        if attention not in ("auto", "flash", "xla"):
            raise TpusimError(f"attention={attention!r}: use 'flash' (fused: scores stay on chip), 'xla' "
                              "(the score matrices in HBM, as XLA compiles plain JAX attention) or 'auto' (flash on TPUs)")
        return cls(precision, vmem_fraction, attention)


def _axes(mesh: Any) -> dict[str, int] | None:
    """Axis sizes from a dict or a jax.sharding.Mesh/AbstractMesh."""
    if mesh is None:
        return None
    if not isinstance(mesh, dict) and not hasattr(mesh, "shape"):
        raise TpusimError(f"mesh={mesh!r}: give axis sizes as a dict ({{'data': 8}}) or a jax.sharding.Mesh")
    return dict(mesh) if isinstance(mesh, dict) else dict(mesh.shape)


def _target(device: str | Path | Chip, mesh: Any) -> tuple[Any, Chip, dict[str, int] | None]:
    """(system or None, chip, mesh axes or None) for a device name: a slice without a mesh gets
    one "data" axis over every device."""
    from tpusim.distribute.topology import parse_system

    axes = _axes(mesh)
    system = parse_system(str(device)) if isinstance(device, (str, Path)) else None
    chip = system.chip if system is not None else resolve_chip(device)
    if axes is not None and system is None:
        system = _single_chip_system(chip)
    if axes is None and system is not None:
        axes = {"data": system.slice.devices * system.num_slices}
    return system, chip, axes


def _donated_leaves(donate_argnums: int | tuple[int, ...], example_args: tuple) -> list[int]:
    """Flat input positions of the donated arguments' leaves."""
    nums = (donate_argnums,) if isinstance(donate_argnums, int) else tuple(donate_argnums)
    bad = [n for n in nums if not -len(example_args) <= n < len(example_args)]
    if bad:
        raise TpusimError(f"donate_argnums {bad} out of range: the function takes {len(example_args)} arguments")
    starts, flat = [], 0
    for arg in example_args:
        starts.append(flat)
        flat += len(jax.tree.leaves(arg))
    wanted = {n % len(example_args) for n in nums}
    return [starts[i] + j for i in sorted(wanted) for j in range(len(jax.tree.leaves(example_args[i])))]


def _shard_map_mesh(graph: Graph, system: Any, chip: Chip) -> dict[str, int] | None:
    """The mesh of the program's shard_maps, checked against the devices it is compiled for."""
    from tpusim.compiler.manual import shard_map_meshes

    mesh: dict[str, int] = {}
    for m in shard_map_meshes(graph):
        mesh.update(m)
    if not mesh:
        return None
    n = math.prod(mesh.values())
    devices = system.slice.devices * system.num_slices if system is not None else 1
    if n != devices:
        where = f"one {chip.name} chip" if system is None else f"{devices} devices"
        raise ShardingError(f"the program's shard_map runs over the mesh {mesh} ({n} devices), but it is compiled for "
                            f"{where}: compile for a slice of {n} devices (device='{chip.name}-<size>') or pass a "
                            "mesh= that names every device")
    return mesh


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def _kind(dtype: Any) -> str:
    """The family a dtype belongs to: arguments may change width within it, not across it."""
    for family, name in ((jnp.bool_, "boolean"), (jnp.complexfloating, "complex"), (jnp.floating, "floating-point"),
                         (jnp.integer, "integer")):
        if jnp.issubdtype(dtype, family):
            return name
    return str(dtype)


def _single_chip_system(chip: Chip) -> Any:
    from tpusim.distribute.topology import make_slice, System

    return System(make_slice(chip.name, 1), 1, chip.name)


@dataclass(frozen=True)
class _Repeat:
    spec: Any
    count: int


def _flat_specs(in_specs: Any, example_args: tuple, n_inputs: int) -> list[Any]:
    """One PartitionSpec (or None) per flat input. `in_specs` has an entry per argument: a
    spec applied to every leaf of that argument, or a pytree of specs matching it."""
    from jax.sharding import PartitionSpec

    if in_specs is None:
        return [None] * n_inputs
    if not isinstance(in_specs, (tuple, list)) or isinstance(in_specs, PartitionSpec):
        in_specs = (in_specs,)
    if len(in_specs) != len(example_args):
        raise TpusimError(f"in_specs has {len(in_specs)} entries but the function takes {len(example_args)} arguments")
    flat: list[Any] = []
    is_spec = lambda x: x is None or isinstance(x, PartitionSpec)  # noqa: E731
    for spec, arg in zip(in_specs, example_args):
        try:  # `spec` is a prefix of the argument's tree: a spec covers every leaf below it
            per_leaf = jax.tree.map(lambda sp, sub: _Repeat(sp, len(jax.tree.leaves(sub))), spec, arg, is_leaf=is_spec)
        except (ValueError, TypeError) as e:
            raise TpusimError(f"in_specs entry {spec} does not match the structure of its argument: {e}") from None
        for group in jax.tree.leaves(per_leaf, is_leaf=lambda x: isinstance(x, _Repeat)):
            flat.extend([group.spec] * group.count)
    return flat
