"""Chip descriptions: one YAML file per chip, validated by pydantic.

Every number is written as ``{value: ..., source: ID}`` where ID is a key of the file's
``sources`` table (or ``derived: <arithmetic>`` for a value computed from sourced ones), so a
reader can always trace a figure back to a public document.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tpusim.errors import ChipConfigError, UnknownDeviceError

CATALOG_DIR = Path(__file__).parent / "chips"


class Sourced(BaseModel):
    """A number together with where it comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    value: float
    source: str = Field(min_length=1)
    note: str | None = None

    @field_validator("value", mode="before")
    @classmethod
    def _a_number(cls, v: object) -> object:
        if isinstance(v, bool):  # YAML's true/false would pass as 1/0
            raise ValueError(f"must be a number, got {v}")
        return v

    @field_validator("value")
    @classmethod
    def _finite_positive(cls, v: float) -> float:
        if not v > 0 or v != v or v == float("inf"):
            raise ValueError("must be a finite positive number")
        if v > 1e12:  # no chip fact is this large (HBM in GiB, bandwidth in GB/s, ...): a typo
            raise ValueError(f"{v:g} is implausibly large for a chip fact (check the unit)")
        return v


_COUNTS = ("tensorcores_per_chip", "mxus_per_core", "mxu_rows", "mxu_cols", "sm_count", "vpu_sublanes", "vpu_lanes",
           "vpu_alus_per_lane", "ici_links_per_chip", "pod_max_chips", "chips_per_host")


class Chip(BaseModel):
    """One accelerator (or host CPU) as tpusim models it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    display_name: str
    kind: Literal["tpu", "gpu", "cpu"]
    aliases: list[str] = []
    sources: dict[str, str]
    notes: list[str] = []
    # Which entry of sim/calibration.yaml this chip's kernels are timed with (its architecture's
    # measured constants: a GPU shares them with the other GPUs of its architecture). Defaults to
    # the chip's own name, then the kind's default entry.
    calibration: str | None = None

    # Compute
    tensorcores_per_chip: Sourced | None = None
    megacore: bool = False
    mxus_per_core: Sourced | None = None
    mxu_rows: Sourced | None = None
    mxu_cols: Sourced | None = None
    mxu_dtype: Literal["bf16", "int8"] = "bf16"
    clock_mhz: Sourced | None = None
    peak_bf16_tflops: Sourced | None = None
    peak_int8_tops: Sourced | None = None
    peak_fp8_tflops: Sourced | None = None
    peak_fp32_tflops: Sourced | None = None
    peak_tf32_tflops: Sourced | None = None  # GPUs: f32 matmuls at default precision run as TF32
    sm_count: Sourced | None = None
    vpu_sublanes: Sourced | None = None
    vpu_lanes: Sourced | None = None
    vpu_alus_per_lane: Sourced | None = None

    # Memory
    memory_type: str
    hbm_gib: Sourced
    hbm_bandwidth_gbps: Sourced
    vmem_mib_per_core: Sourced | None = None
    # Common memory (TPU v4): an on-chip SRAM shared by the TensorCores that XLA places short-lived
    # buffers in, so their traffic skips HBM. Read and write bandwidths per chip.
    cmem_mib: Sourced | None = None
    cmem_read_gbps: Sourced | None = None
    cmem_write_gbps: Sourced | None = None
    l2_cache_mib: Sourced | None = None

    # Interconnect and system
    ici_links_per_chip: Sourced | None = None
    ici_link_bw_unidir_gbps: Sourced | None = None
    ici_topology: str | None = None
    pod_max_chips: Sourced | None = None
    chips_per_host: Sourced | None = None
    dcn_bw_per_chip_gbitps: Sourced | None = None
    ici_hop_latency_us: Sourced | None = None
    nvlink_bw_bidir_gbps: Sourced | None = None
    host_link_bw_gbps: Sourced | None = None  # chip <-> host memory (PCIe), one direction, GB/s

    # Power and price
    tdp_w: Sourced | None = None
    idle_power_w: Sourced | None = None  # measured chip power with nothing running
    max_power_w: Sourced | None = None  # measured chip power under the heaviest load
    price_usd_per_chip_hour: Sourced | None = None
    price_date: str | None = None

    @model_validator(mode="after")
    def _check_consistency(self) -> "Chip":
        for field_name in self.__class__.model_fields:
            val = getattr(self, field_name)
            if isinstance(val, Sourced):
                src = val.source
                if not src.startswith("derived") and src not in self.sources:
                    raise ValueError(
                        f"{field_name}.source '{src}' is not a key of 'sources' "
                        f"(known: {', '.join(sorted(self.sources))}); cite it or write 'derived: ...'"
                    )
        for f in _COUNTS:  # units the hardware has a whole number of
            val = getattr(self, f)
            if val is not None and (val.value != int(val.value) or val.value < 1):
                raise ValueError(f"{f} must be a whole number of at least 1, got {val.value:g}")
        if self.kind == "tpu":
            for f in ("tensorcores_per_chip", "mxus_per_core", "mxu_rows", "mxu_cols", "clock_mhz", "vmem_mib_per_core"):
                if getattr(self, f) is None:
                    raise ValueError(f"{f} is required for a TPU")
            if self.peak_matmul_tflops is None:
                raise ValueError("peak_bf16_tflops (or peak_int8_tops for an int8 MXU) is required for a TPU")
        if self.cmem_mib is not None and self.cmem_read_gbps is None:
            raise ValueError("cmem_mib needs cmem_read_gbps (and cmem_write_gbps if writes are slower): "
                             "traffic to CMEM is timed at its bandwidth")
        if self.kind == "gpu" and self.sm_count is None:
            raise ValueError("sm_count is required for a GPU (a GEMM's tiles run in waves over the SMs)")
        if self.kind in ("gpu", "cpu") and self.peak_matmul_tflops is None:
            raise ValueError("peak_bf16_tflops (or peak_fp32_tflops) is required")
        return self

    # ---- derived quantities used by the compiler and simulators -----------------------------
    @property
    def peak_matmul_tflops(self) -> float | None:
        """Dense peak of the matrix unit in its native input type (bf16, or int8 on TPU v1)."""
        if self.mxu_dtype == "int8" and self.peak_int8_tops is not None:
            return self.peak_int8_tops.value
        for f in (self.peak_bf16_tflops, self.peak_fp32_tflops):
            if f is not None:
                return f.value
        return None

    def matmul_rate(self, input_type: str) -> tuple[float, str]:
        """(speed relative to the native peak, which published peak it is) for MXU operands of
        `input_type` ('bf16', 'int8', 'fp8'): int8 and fp8 run at their own published peaks
        where the chip has them (2x bf16 on v5e/v6e/v5p int8, TPU7x fp8), else at the bf16 rate."""
        native = self.peak_matmul_tflops
        own = {"int8": self.peak_int8_tops, "fp8": self.peak_fp8_tflops}.get(input_type)
        if own is None or not native or self.mxu_dtype == "int8":
            return 1.0, f"{self.mxu_dtype} peak"
        return own.value / native, f"{input_type} peak"

    @property
    def mxu_shape(self) -> tuple[int, int]:
        """(rows, cols) of one systolic array; GPUs/CPUs get a nominal 128x128 tile."""
        if self.mxu_rows is None or self.mxu_cols is None:
            return (128, 128)
        return (int(self.mxu_rows.value), int(self.mxu_cols.value))

    @property
    def hbm_bytes(self) -> int:
        return int(self.hbm_gib.value * 2**30)

    @property
    def cores_per_device(self) -> int:
        """TensorCores one JAX device (one compiled program) drives: both on megacore chips
        (v4, v5p), else one (v2, v3 and TPU7x expose each core or chiplet as a device)."""
        if self.kind != "tpu" or self.tensorcores_per_chip is None:
            return 1
        return int(self.tensorcores_per_chip.value) if self.megacore else 1

    @property
    def device_fraction(self) -> float:
        """Share of the chip's HBM (capacity and bandwidth) that one device owns."""
        if self.kind != "tpu" or self.tensorcores_per_chip is None:
            return 1.0
        return self.cores_per_device / self.tensorcores_per_chip.value

    @property
    def device_hbm_bytes(self) -> int:
        return int(self.hbm_bytes * self.device_fraction)

    @property
    def device_hbm_bandwidth(self) -> float:
        """Bytes per second of HBM bandwidth available to one device."""
        return self.hbm_bandwidth_gbps.value * 1e9 * self.device_fraction

    @property
    def device_peak_flops(self) -> float:
        """Dense peak of one device in FLOP/s (MXU native type)."""
        return (self.peak_matmul_tflops or 0.0) * 1e12 * self.device_fraction

    @property
    def vmem_bytes(self) -> int:
        """On-chip memory the compiler blocks against: VMEM per TensorCore on TPUs (the unified
        buffer on v1); the L2 cache on GPUs; a nominal 32 MiB last-level cache on CPUs."""
        if self.vmem_mib_per_core is not None:
            return int(self.vmem_mib_per_core.value * 2**20)
        if self.l2_cache_mib is not None:
            return int(self.l2_cache_mib.value * 2**20)
        return 32 * 2**20


def _format_validation_error(path: Path, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(file)"
        parts.append(f"field '{loc}': {e['msg']}")
    return f"invalid chip file {path}: " + "; ".join(parts)


@functools.lru_cache(maxsize=64)
def _load_chip_cached(path_str: str) -> Chip:
    path = Path(path_str)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ChipConfigError(f"cannot read chip file {path}: {e}") from None
    except UnicodeDecodeError as e:
        raise ChipConfigError(f"chip file {path} is not UTF-8 text ({e.reason} at byte {e.start}): "
                              "save it as a UTF-8 YAML file") from None
    except yaml.YAMLError as e:
        raise ChipConfigError(f"chip file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ChipConfigError(f"chip file {path} must hold a mapping of fields, got {type(data).__name__}")
    try:
        return Chip.model_validate(data)
    except ValidationError as e:
        raise ChipConfigError(_format_validation_error(path, e)) from None


def load_chip(path: str | Path) -> Chip:
    """Load and validate one chip file (raises ChipConfigError naming the file and the field)."""
    return _load_chip_cached(str(Path(path).resolve()))


@functools.lru_cache(maxsize=1)
def _catalog() -> dict[str, Chip]:
    chips = {}
    for f in sorted(CATALOG_DIR.glob("*.yaml")):
        chip = load_chip(f)
        chips[chip.name] = chip
    return chips


def list_devices() -> list[str]:
    """Names of the chips in the built-in catalog, in catalog order."""
    return list(_catalog())


def catalog() -> list[Chip]:
    return list(_catalog().values())


def _normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def resolve_device(device: "str | Path | Chip") -> Chip:
    """Turn a user's device argument (name, alias, chip-file path or Chip) into a Chip."""
    if isinstance(device, Chip):
        return device
    text = str(device)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return load_chip(text)
    key = _normalize(text)
    for chip in _catalog().values():
        if key == _normalize(chip.name) or key in {_normalize(a) for a in chip.aliases}:
            return chip
    raise UnknownDeviceError(
        f"unknown device '{device}'. Known devices: {', '.join(list_devices())} "
        "(or pass the path of a chip YAML file)."
    )
