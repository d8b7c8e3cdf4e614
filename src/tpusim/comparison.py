"""Which accelerator, and how many? One model estimated on several devices, side by side: step
time, throughput, MFU, memory fit (and the smallest slice that fits when one chip does not),
dollars and energy.

`compare(model, *args, devices=[...])` traces and lowers the model once and compiles it for each device (a chip, a slice such
as "v5e-8", a GPU node such as "h100-8") and returns a `Comparison`: a table (`table()`, and
`to_pandas()` for a DataFrame) and a plot (`plot(path)`). On several devices without a mesh the
model runs data-parallel, every input split along its first dimension where the device count
divides it (ZeRO-style for weights); pass `mesh=`/`in_specs=` to say otherwise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import jax

from tpusim.api import compile as tpu_compile
from tpusim.api import jit
from tpusim.errors import OutOfMemoryError, TpusimError
from tpusim.hardware.chip import Chip, resolve_device
from tpusim.hardware.prices import price_of

DEFAULT_DEVICES = ("v5e", "v6e", "v5p", "h100", "a100", "cpu")
_FIT_SEARCH = (2, 4, 8, 16, 32, 64)  # chips tried, in order, when a model does not fit


@dataclass(frozen=True)
class DeviceRow:
    """One device's line of a comparison (per step of the model as given)."""

    device: str
    chip: str
    chips: float
    step_s: float
    throughput: float  # items per second
    mfu: float  # counted FLOPs / (step time x peak)
    peak_hbm_gib: float  # per device
    hbm_gib: float  # per device
    fits: bool
    fits_on: str  # the smallest slice that fits, when the device itself does not
    usd_per_hour: float | None
    usd_per_million: float | None
    energy_j: float | None  # per step, all chips
    kwh_per_million: float | None
    average_w_per_chip: float | None
    price_source: str
    note: str = ""


class Comparison:
    """The rows of a comparison, with the unit the throughput counts."""

    def __init__(self, rows: list[DeviceRow], unit: str, items_per_step: int) -> None:
        self.rows, self.unit, self.items_per_step = rows, unit, items_per_step

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.rows]).set_index("device")

    def sorted(self, by: str = "step_s") -> "Comparison":
        """Rows ordered by a column (missing values last)."""
        if by not in DeviceRow.__dataclass_fields__:
            raise TpusimError(f"cannot sort by '{by}': columns are {', '.join(DeviceRow.__dataclass_fields__)}")
        key = lambda r: (getattr(r, by) is None, getattr(r, by) if getattr(r, by) is not None else 0)  # noqa: E731
        return Comparison(sorted(self.rows, key=key), self.unit, self.items_per_step)

    def table(self, title: str = "", width: int | None = None) -> Any:
        from tpusim.report.compare_table import comparison_table

        return comparison_table(self, title, width)

    def plot(self, path: str) -> str:
        from tpusim.report.compare_table import plot_comparison

        return plot_comparison(self, path)

    def __repr__(self) -> str:
        best = min(self.rows, key=lambda r: r.step_s) if self.rows else None
        return (f"Comparison({len(self.rows)} devices, {self.items_per_step} {self.unit} per step"
                + (f"; fastest {best.device} {best.step_s * 1e3:.3g} ms" if best else "") + ")")


def _items(example_args: tuple) -> int:
    """Items per step when not given: the leading dimension of the first plain array argument."""
    for a in example_args:
        if hasattr(a, "shape") and len(getattr(a, "shape", ())) > 0:
            return int(a.shape[0])
    for leaf in jax.tree.leaves(example_args):
        if hasattr(leaf, "shape") and len(leaf.shape) > 0:
            return int(leaf.shape[0])
    return 1


def _split_leading(example_args: tuple, n: int) -> tuple:
    """in_specs splitting every leaf along its first dimension over "data" where n divides it."""
    from jax.sharding import PartitionSpec as P

    def spec(leaf: Any) -> Any:
        shape = getattr(leaf, "shape", ())
        return P("data") if len(shape) > 0 and shape[0] % n == 0 else None

    return tuple(jax.tree.map(spec, a) for a in example_args)


def devices_of(name: str) -> tuple[Chip, int]:
    from tpusim.distribute.topology import parse_system

    system = parse_system(name)
    if system is None:
        return resolve_device(name), 1
    return system.chip, system.slice.devices * system.num_slices


def _lower_once(fn: Any, args: tuple, kw: dict[str, Any]) -> Any:
    """The model traced and lowered once for every device, or None when its tracing needs a
    device's mesh (it names mesh axes itself): then each device traces it again."""
    try:
        return jit(fn, donate_argnums=kw.get("donate_argnums", ())).lower(*args, mesh=kw.get("mesh"))
    except TpusimError:
        return None


def _compile(lowered: Any, fn: Any, args: tuple, name: str, kw: dict[str, Any]) -> Any:
    chip, n = devices_of(name)
    opts = dict(kw)
    if n > 1 and opts.get("mesh") is None:
        opts["in_specs"] = opts.get("in_specs") or _split_leading(args, n)
    elif n == 1:
        opts.pop("mesh", None)
        opts.pop("in_specs", None)
    if lowered is None:
        return tpu_compile(fn, *args, device=name, **opts)
    opts.pop("donate_argnums", None)
    return lowered.compile(name, **opts)


def _smallest_fit(lowered: Any, fn: Any, args: tuple, chip: Chip, kw: dict[str, Any]) -> str:
    from tpusim.distribute.scaling import slice_name

    for chips in _FIT_SEARCH:
        try:
            name = slice_name(chip.name, chips)
            _compile(lowered, fn, args, name, kw)
            return name
        except TpusimError:  # out of memory, or not a size the generation offers
            continue
    return f"none up to {_FIT_SEARCH[-1]} chips"


def compare(fn_or_model: Any, *example_args: Any, devices: Any = DEFAULT_DEVICES, items_per_step: int | None = None,
            unit: str = "samples", prices: dict[str, float] | None = None, **compile_kw: Any) -> Comparison:
    """Estimate one step of `fn_or_model` on every device of `devices` (names as `compile`
    takes them). `items_per_step` (default: the leading dimension of the first array argument)
    counts what one step processes, in `unit` ("samples", "tokens", "images"); `prices`
    overrides US$ per chip-hour by chip name. Other keywords go to `tpusim.compile`."""
    if isinstance(devices, str):
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    devices = list(devices)
    if not devices:
        raise TpusimError("compare needs at least one device, e.g. devices=['v5e', 'h100']")
    for d in devices:  # every name checked before the expensive work
        devices_of(d)
    items = items_per_step if items_per_step is not None else _items(example_args)
    if isinstance(items, bool) or not isinstance(items, int) or items <= 0:
        raise TpusimError(f"items_per_step must be a positive integer, got {items!r}")
    lowered = _lower_once(fn_or_model, example_args, compile_kw)  # traced and lowered once for all devices
    rows = []
    for name in devices:
        chip, n = devices_of(name)
        chips = n * chip.device_fraction
        note, fits_on = "", ""
        try:
            compiled = _compile(lowered, fn_or_model, example_args, name, compile_kw)
            fits = True
        except OutOfMemoryError:
            fits = False
            compiled = _compile(lowered, fn_or_model, example_args, name, dict(compile_kw, check_memory=False))
            fits_on = _smallest_fit(lowered, fn_or_model, example_args, chip, compile_kw)
        est = compiled.estimate()
        price = price_of(chip.name, prices)
        per_hour = price.usd * chips if price else None
        step = est.time_s
        energy = est.energy.joules * n if est.energy else None
        if not fits:
            note = f"needs {est.peak_hbm_bytes / 2**30:.1f} GiB per device"
        elif est.energy is None:
            note = "no published power figure: no energy estimate"
        rows.append(DeviceRow(
            device=name, chip=chip.name, chips=chips, step_s=step, throughput=items / step if step else math.inf,
            mfu=est.flops / (step * est.peak_flops) if step and est.peak_flops else 0.0,
            peak_hbm_gib=est.peak_hbm_bytes / 2**30, hbm_gib=chip.device_hbm_bytes / 2**30, fits=fits, fits_on=fits_on,
            usd_per_hour=per_hour,
            usd_per_million=per_hour / 3600 * step / items * 1e6 if per_hour is not None else None,
            energy_j=energy, kwh_per_million=energy / items * 1e6 / 3.6e6 if energy is not None else None,
            average_w_per_chip=est.energy.average_w / chip.device_fraction if est.energy else None,
            price_source=f"{price.cloud} {price.kind} {price.date}: {price.source}" if price else "no published price",
            note=note))
    return Comparison(rows, unit, items)
