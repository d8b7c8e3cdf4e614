"""Command line: `tpusim devices`, `demo`, `run`, `report`, `compare`, `validate`, `scale`, `ops`."""

from __future__ import annotations

import typer
from rich.console import Console

from tpusim.errors import TpusimError

app = typer.Typer(help="tpusim: a software TPU for JAX and Keras models.", no_args_is_help=True, add_completion=False)


class _LazyConsole:
    """A rich Console made when first used by a command, so it sizes itself to the terminal
    (or COLUMNS) of that call rather than of the import."""

    def __getattr__(self, name: str):
        return getattr(Console(), name)


console = _LazyConsole()


@app.command()
def devices(json_out: str = typer.Option(None, "--json", help="write the catalog as JSON here ('-': stdout)"),
            csv_out: str = typer.Option(None, "--csv", help="write the catalog as CSV here ('-': stdout)")) -> None:
    """List the chips in the catalog."""
    from tpusim.hardware.chip import catalog
    from tpusim.report.tables import devices_frame, devices_table

    _writable(json_out, "--json")
    _writable(csv_out, "--csv")
    chips = catalog()
    if json_out or csv_out:
        frame = devices_frame(chips)
        if _export(frame.to_json(orient="records", indent=1), frame.to_csv(index=False), json_out, csv_out):
            return
    console.print(devices_table(chips))


@app.command()
def demo(device: str = typer.Option("v4", help="chip name or chip YAML path"),
         batch: int = typer.Option(32, help="batch size")) -> None:
    """Compile and run the classic CNN on a simulated TPU and check it against JAX."""
    from tpusim.demo import run_demo

    if batch <= 0:
        _usage(f"--batch must be positive, got {batch}")
    try:
        result = run_demo(device, batch, console)
    except TpusimError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    if not result["ok"]:
        raise typer.Exit(1) from None


@app.command()
def run(script: str = typer.Argument(..., help="a Python file defining `model` and `inputs`"),
        device: str = typer.Option("v5e", help="chip name or chip YAML path"),
        precision: str = typer.Option(None, help="default | high | highest (overrides the script)"),
        trace: str = typer.Option(None, help="write a Chrome/Perfetto trace JSON here"),
        roofline: str = typer.Option(None, help="write a roofline PNG here"),
        top: int = typer.Option(25, help="kernels to list (0: all)"),
        json_out: str = typer.Option(None, "--json", help="write the summary and every kernel as JSON here ('-': stdout)"),
        csv_out: str = typer.Option(None, "--csv", help="write every kernel as CSV here ('-': stdout)")) -> None:
    """Compile a user's model script for a chip and print where the time goes."""
    from tpusim.api import compile as tpu_compile
    from tpusim.frontend.script import load_model_script
    from tpusim.report.estimate_tables import estimate_summary, ops_table

    _writable(trace, "--trace")
    _writable(roofline, "--roofline")
    _writable(json_out, "--json")
    _writable(csv_out, "--csv")
    if top < 0:
        _usage(f"--top must be 0 (all) or more, got {top}")
    try:
        with console.status(f"loading {script}..."):
            model, inputs, options = load_model_script(script)
        with console.status(f"compiling for {device}..."):
            sharding = {"mesh": options["mesh"], "in_specs": options["in_specs"]} if options["mesh"] else {}
            compiled = tpu_compile(model, *inputs, device=device, precision=precision or options["precision"], **sharding)
            est = compiled.estimate()
    except TpusimError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    if json_out or csv_out:
        import json

        frame = est.to_pandas()
        if _export(json.dumps({"summary": est.to_dict(), "kernels": frame.to_dict("records")}, indent=1, default=float),
                   frame.to_csv(index=False), json_out, csv_out):
            return
    console.print(ops_table(est, limit=top or None, width=console.width))
    console.print(estimate_summary(est, f"{compiled.name} on {compiled.chip.display_name} (precision {compiled.precision})"))
    if trace:
        from tpusim.report.trace import write_compiled_trace

        console.print(f"trace written to {write_compiled_trace(compiled, trace)}")
    if roofline:
        from tpusim.report.roofline import plot_roofline

        console.print(f"roofline written to {plot_roofline(est, roofline)}")


@app.command()
def report(script: str = typer.Argument(..., help="a Python file defining `model` and `inputs`"),
           device: str = typer.Option("v5e", help="chip, slice or GPU name, or chip YAML path"),
           out: str = typer.Option("report.html", "-o", "--out", help="the HTML file to write"),
           precision: str = typer.Option(None, help="default | high | highest (overrides the script)"),
           compare_with: str = typer.Option(None, "--compare", help="also estimate on these devices (comma-separated) for a compare page"),
           trace: str = typer.Option(None, help="also write an XProf/Perfetto trace JSON here")) -> None:
    """Write one self-contained HTML report of a model on a device: overview, op profile,
    timeline, roofline, memory viewer, compiled stages, collectives, and the MXU at work."""
    import jax

    from tpusim.api import compile as tpu_compile
    from tpusim.comparison import compare as run_compare, devices_of
    from tpusim.frontend.script import load_model_script

    _writable(out, "--out")
    _writable(trace, "--trace")
    others = [d.strip() for d in (compare_with or "").split(",") if d.strip()]
    if compare_with is not None and not others:
        _usage("--compare is empty: give devices, e.g. --compare v5e,h100")
    for d in [device, *others]:  # a bad device name fails before the script runs
        try:
            devices_of(d)
        except TpusimError as e:
            _usage(f"{'--device' if d == device else '--compare'}: {e}")
    try:
        with console.status(f"loading {script}..."):
            model, inputs, options = load_model_script(script)
        sharding = {"mesh": options["mesh"], "in_specs": options["in_specs"]} if options["mesh"] else {}
        with console.status(f"compiling for {device}..."):
            compiled = tpu_compile(model, *inputs, device=device, precision=precision or options["precision"], **sharding)
        comparison = None
        if others:
            with console.status(f"estimating on {len(others)} more devices..."):
                comparison = run_compare(model, *inputs, devices=list(dict.fromkeys([device, *others])),
                                         precision=precision or options["precision"],
                                         **sharding)
        concrete = all(hasattr(x, "__array__") for x in jax.tree.leaves(inputs))
        with console.status("writing the report..."):
            written = compiled.report(out, *(inputs if concrete else ()), comparison=comparison)
    except TpusimError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    est = compiled.estimate()
    console.print(f"report written to {written.path} ({len(written.html) / 1e6:.2f} MB): {compiled.name} on {est.device}, "
                  f"{est.time_s * 1e3:.3f} ms per step")
    if trace:
        from tpusim.report.trace import write_compiled_trace

        console.print(f"trace written to {write_compiled_trace(compiled, trace)}")


@app.command()
def compare(script: str = typer.Argument(..., help="a Python file defining `model` and `inputs`"),
            devices: str = typer.Option("v5e,v6e,v5p,h100,a100,cpu", help="comma-separated chips, slices or GPU nodes"),
            items_per_step: int = typer.Option(None, help="what one step processes (default: the batch)"),
            unit: str = typer.Option("samples", help="what items are: samples, tokens, images"),
            sort: str = typer.Option("step_s", help="column to sort by (step_s, usd_per_million, kwh_per_million, ...)"),
            price: list[str] = typer.Option([], help="override a price, e.g. --price h100=2.99 (US$ per chip-hour)"),
            plot: str = typer.Option(None, help="write the comparison plot (PNG) here"),
            json_out: str = typer.Option(None, "--json", help="write the table as JSON here ('-': stdout)"),
            csv_out: str = typer.Option(None, "--csv", help="write the table as CSV here ('-': stdout)")) -> None:
    """Estimate one model on several devices side by side: time, throughput, fit, $ and energy."""
    from tpusim.comparison import DeviceRow, compare as run_compare, devices_of
    from tpusim.frontend.script import load_model_script

    for path, option in ((plot, "--plot"), (json_out, "--json"), (csv_out, "--csv")):
        _writable(path, option)
    names = [d.strip() for d in devices.split(",") if d.strip()]
    if not names:
        _usage("--devices is empty: give chips, e.g. --devices v5e,h100")
    if sort not in DeviceRow.__dataclass_fields__:
        _usage(f"--sort {sort}: columns are {', '.join(DeviceRow.__dataclass_fields__)}")
    if items_per_step is not None and items_per_step <= 0:
        _usage(f"--items-per-step must be positive, got {items_per_step}")
    prices = {}
    for p in price:
        chip, _, value = p.partition("=")
        try:
            prices[chip.strip()] = float(value)
        except ValueError:
            _usage(f"--price {p}: write CHIP=US$ per chip-hour, e.g. --price h100=2.99")
        if prices[chip.strip()] < 0:
            _usage(f"--price {p}: a price cannot be negative")
    for d in names:  # a bad device name fails before the script runs
        try:
            devices_of(d)
        except TpusimError as e:
            _usage(f"--devices: {e}")
    try:
        with console.status(f"loading {script}..."):
            model, inputs, options = load_model_script(script)
        sharding = {"mesh": options["mesh"], "in_specs": options["in_specs"]} if options["mesh"] else {}
        with console.status(f"compiling for {len(names)} devices..."):
            result = run_compare(model, *inputs, devices=names, items_per_step=items_per_step, unit=unit,
                                 prices=prices, precision=options["precision"], **sharding).sorted(sort)
    except TpusimError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    frame = result.to_pandas()
    if not _export(frame.to_json(orient="index", indent=1), frame.to_csv(), json_out, csv_out):
        console.print(result.table(f"{script}: one step, {result.items_per_step:,} {result.unit} (estimates)",
                                   console.width))
        for r in result.rows:
            if r.note:
                console.print(f"[dim]{r.device}: {r.note}[/dim]")
    if plot:
        console.print(f"plot written to {result.plot(plot)}")


@app.command()
def serve(model: str = typer.Option("llama3-8b", help="llama3-8b, llama3-70b or llama3.2-1b (Llama-shaped configs)"),
          device: str = typer.Option("v5e-8", help="chip, slice or GPU node (tensor parallel over its devices)"),
          batches: str = typer.Option("1,8,32,128", help="comma-separated batch sizes"),
          prompt: int = typer.Option(1024, help="prompt length (tokens)"),
          gen: int = typer.Option(256, help="tokens generated per sequence"),
          tpot_ms: float = typer.Option(None, help="latency target per output token, ms: report the largest batch "
                                                    "meeting it"),
          script: str = typer.Option(None, help="a classic model instead (a FILE.py defining `model` and `inputs`): "
                                                "latency and throughput against batch size"),
          latency_ms: float = typer.Option(None, help="with --script: the response-time limit, ms"),
          json_out: str = typer.Option(None, "--json", help="write the table as JSON here ('-': stdout)")) -> None:
    """LLM serving: time to first token, time per output token and tokens/s against batch size
    (or, with --script, a classic model's latency against batch size)."""
    from tpusim.comparison import devices_of
    from tpusim.models.llama import CONFIGS
    from tpusim.serving import latency_vs_batch, serve as run_serve

    _writable(json_out, "--json")
    if script is None and model.lower() not in CONFIGS:
        _usage(f"--model {model}: choose one of {', '.join(CONFIGS)}")
    try:
        sizes = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        _usage(f"--batches {batches}: give comma-separated positive integers, e.g. 1,8,32")
    if not sizes or any(b <= 0 for b in sizes) or prompt <= 0 or gen <= 0 or any(
            t is not None and t <= 0 for t in (tpot_ms, latency_ms)):
        _usage("batch sizes, --prompt, --gen, --tpot-ms and --latency-ms must be positive")
    try:
        devices_of(device)
    except TpusimError as e:
        _usage(f"--device: {e}")
    if script is not None:
        from tpusim.frontend.script import load_model_script

        try:
            classic, inputs, options = load_model_script(script)
            with console.status(f"compiling for {len(sizes)} batch sizes..."):
                latency = latency_vs_batch(classic, *inputs, device=device, batches=sizes, precision=options["precision"])
        except TpusimError as e:
            console.print(f"[red]error:[/red] {e}")
            raise typer.Exit(1) from None
        if json_out == "-":
            typer.echo(latency.to_pandas().to_json(orient="index", indent=1))
            return
        console.print(latency.table(f"{script} on {device}: latency against batch (estimates)"))
        if latency_ms is not None:
            console.print(f"largest batch within {latency_ms:g} ms: {latency.largest_batch(latency_ms / 1e3)}")
        return
    try:
        with console.status(f"compiling prefill and decode for {len(sizes)} batch sizes..."):
            report = run_serve(model, device, sizes, prompt, gen)
    except TpusimError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    if json_out:
        text = report.to_pandas().to_json(orient="index", indent=1)
        if json_out == "-":
            typer.echo(text)
            return
        open(json_out, "w").write(text)
    console.print(report.table())
    console.print(f"KV cache room beside the weights: {report.kv_capacity_tokens:,} token positions per device; "
                  f"largest batch that fits: {report.largest_batch()}")
    if tpot_ms is not None:
        console.print(f"largest batch within {tpot_ms:g} ms per output token: {report.largest_batch(tpot_ms / 1e3)}")


def _export(json_text: str | None, csv_text: str | None, json_out: str | None, csv_out: str | None) -> bool:
    """Write the --json/--csv outputs that were asked for ('-': stdout). True when one went to
    stdout, so the command prints no table after it."""
    for path, text in ((json_out, json_text), (csv_out, csv_text)):
        if path == "-":
            typer.echo(text)
        elif path:
            with open(path, "w") as f:
                f.write(text or "")
    return "-" in (json_out, csv_out)


def _writable(path: str | None, option: str) -> None:
    """An output file must be writable where asked (checked before the work, not after it)."""
    if path is None or path == "-":
        return
    from pathlib import Path

    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        _usage(f"{option} {path}: the folder {parent} does not exist")
    if Path(path).is_dir():
        _usage(f"{option} {path}: that is a folder; give a file name")


def _usage(message: str) -> None:
    """A command-line mistake: one line, exit code 2, before any work."""
    console.print(f"[red]usage error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def validate(refit: bool = typer.Option(False, help="refit the calibration constants on their stated subsets first"),
             family: str = typer.Option(None, help="also list the rows of this kernel family, worst first "
                                                   "(e.g. 'v4 GEMM f16')"),
             rows: int = typer.Option(20, help="how many rows of --family to list"),
             json_out: str = typer.Option(None, "--json", help="write every table (kernel families, whole programs, "
                                                               "memory) as JSON here ('-': stdout)"),
             csv_out: str = typer.Option(None, "--csv", help="write the kernel-family table as CSV here ('-': stdout)")) -> None:
    """Predicted vs measured timings: ~10,250 single-chip kernels over TPU v4, v6e, TPU7x and
    GPUs (H100, B200, MI300X-class; H100 JAX programs timed by this project) by family (in-sample and held-out error apart),
    and whole-program checks."""
    from rich.table import Table

    from tpusim.sim.timing import DEFAULT_CONSTANTS
    from tpusim.validation import kernels
    from tpusim.validation.validate import fit_constants, load_measurements, validate as run_validate

    _writable(json_out, "--json")
    _writable(csv_out, "--csv")
    known = sorted({r.family for r in kernels.measured_rows()})
    if family is not None and family not in known:
        raise typer.BadParameter(f"unknown family {family!r}; known: {', '.join(known)}", param_hint="--family")
    constants, cals = DEFAULT_CONSTANTS, {}
    if refit:
        with console.status("refitting grid_step_s, host_dispatch_s and the per-generation calibration..."):
            constants = fit_constants()
            cals = kernels.fit()
        console.print(f"fitted: grid_step_s = {constants.grid_step_s * 1e6:.3f} us, "
                      f"host_dispatch_s = {constants.host_dispatch_s * 1e6:.1f} us")
        for gen, cal in cals.items():
            console.print(f"fitted {gen}: " + ", ".join(f"{k} = {v['value']:.4g}" for k, v in cal.describe().items()))
        from tpusim.validation.validate import fit_ici_efficiency, fit_mxu_efficiency

        for name, fitted in (("mxu_efficiency", fit_mxu_efficiency()), ("ici_efficiency", fit_ici_efficiency())):
            console.print(", ".join(f"fitted {gen} {name} = {v:.4g} (whole-program rows marked fit: {name})"
                                    for gen, v in fitted.items()))
    with console.status("estimating every measured kernel..."):
        results = kernels.evaluate(None, cals)
    if json_out or csv_out:
        import json
        from dataclasses import asdict

        import pandas as pd

        from tpusim.validation.memory import check_all

        families = kernels.summarize(results)
        with console.status("estimating the whole-program measurements and compiling the memory programs..."):
            data = {"kernel_families": families,
                    "kernel_fits": [{"generation": g, "constant": c, "fitted_on": text} for g, c, text, _ in kernels.FIT_SUBSETS],
                    "programs": [asdict(c) | {"error": c.error} for c in run_validate(constants)],
                    "memory": [asdict(c) | {"error": c.error} for c in check_all("v4")]}
        if _export(json.dumps(data, indent=1, default=str), pd.DataFrame(families).to_csv(index=False), json_out, csv_out):
            return
    t = Table(title="tpusim vs measured single-chip kernels (|error| medians)")
    for col in ("family", "rows", "fitted on", "in-sample", "held out", "p90", "max", "held out <=10%", "<=25%"):
        t.add_column(col, justify="left" if col == "family" else "right")
    pct = lambda x: "-" if x is None else f"{x:.1%}"  # noqa: E731
    for f in kernels.summarize(results):
        t.add_row(f["family"], str(f["rows"]), str(f["fitted_rows"]), pct(f["fit_median"]), pct(f["held_out_median"]),
                  pct(f["held_out_p90"]), pct(f["held_out_max"]), pct(f["held_within_10"]), pct(f["held_within_25"]))
    console.print(t)
    for gen, const, text, _ in kernels.FIT_SUBSETS:
        console.print(f"[dim]fit {gen} {const}: {text}[/dim]")
    if family is not None:
        ft = Table(title=f"{family}: worst rows")
        for col in ("id", "measured", "predicted", "error", "role", "source"):
            ft.add_column(col, justify="right" if col in ("measured", "predicted", "error") else "left")
        picked = sorted((r for r in results if r.row.family == family), key=lambda r: -abs(r.error))[:rows]
        for r in picked:
            ft.add_row(r.row.id, f"{r.row.measured_s * 1e6:.2f} us", f"{r.predicted_s * 1e6:.2f} us", f"{r.error:+.1%}",
                       f"fit {r.role}" if r.role else "held out", r.row.source)
        console.print(ft)

    with console.status("estimating the whole-program measurements..."):
        checks = run_validate(constants)
    t = Table(title="tpusim vs published whole-program measurements")
    for col in ("id", "device", "workload", "measured", "predicted", "error", "role"):
        t.add_column(col, justify="right" if col in ("measured", "predicted", "error") else "left")
    for c in checks:
        t.add_row(c.id, c.device, c.workload, f"{c.measured_s * 1e6:.1f} us", f"{c.predicted_s * 1e6:.1f} us",
                  f"{c.error:+.1%}", f"fit {c.fit}" if c.fit else "held out")
    console.print(t)
    held = [abs(c.error) for c in checks if not c.fit]
    console.print(f"held-out entries: {len(held)}, mean |error| {sum(held) / len(held):.1%}, max {max(held):.1%}")
    for key, text in load_measurements()["sources"].items():
        console.print(f"[dim]{key}: {text}[/dim]")
    _validate_memory()


def _validate_memory() -> None:
    from rich.table import Table

    from tpusim.hardware.chip import resolve_device
    from tpusim.validation.memory import check_all, xla_reference

    with console.status("compiling the memory programs..."):
        checks = check_all("v4")
    hbm = resolve_device("v4").device_hbm_bytes
    t = Table(title="peak HBM: tpusim vs XLA:TPU buffer assignment (TPU v4, nothing fitted)")
    for col in ("program", "XLA", "tpusim", "error", "same fit verdict"):
        t.add_column(col, justify="left" if col == "program" else "right")
    for c in checks:
        t.add_row(c.what, f"{c.xla_bytes / 2**20:,.0f} MiB", f"{c.tpusim_bytes / 2**20:,.0f} MiB", f"{c.error:+.1%}",
                  "yes" if c.same_verdict(hbm) else "NO")
    console.print(t)
    within = sum(abs(c.error) <= 0.10 for c in checks)
    console.print(f"{within} of {len(checks)} programs within 10% of XLA; "
                  f"median |error| {sorted(abs(c.error) for c in checks)[len(checks) // 2]:.1%}")
    console.print(f"[dim]XLA: {xla_reference()['source']}[/dim]")


@app.command()
def scale(model: str = typer.Argument(..., help="resnet50 (data parallel) or gpt (FSDP x tensor parallel)"),
          device: str = typer.Option("v4", help="TPU version: v4, v5e, v5p, v6e, tpu7x"),
          chips: str = typer.Option(None, help="comma-separated chip counts (default: 1, 8, 64, 512, 4096 up "
                                                  "to the generation's largest slice)"),
          batch_per_chip: int = typer.Option(None, help="per-chip batch (images, or sequences for gpt)"),
          plot: str = typer.Option(None, help="write the scaling plot (PNG) here"),
          json_out: str = typer.Option(None, "--json", help="write the table as JSON here ('-': stdout)"),
          csv_out: str = typer.Option(None, "--csv", help="write the table as CSV here ('-': stdout)")) -> None:
    """Estimate a training step from one chip to a pod: time, throughput, efficiency, compute
    vs communication."""
    from dataclasses import asdict

    from rich.table import Table

    from tpusim.distribute.scaling import check_chip_counts, default_chip_counts, plot_scaling, scaling_curve
    from tpusim.report.estimate_tables import columns_for

    for path, option in ((plot, "--plot"), (json_out, "--json"), (csv_out, "--csv")):
        _writable(path, option)
    if batch_per_chip is not None and batch_per_chip <= 0:
        _usage(f"--batch-per-chip must be positive, got {batch_per_chip}")
    try:
        counts = [int(c) for c in chips.split(",") if c.strip()] if chips else default_chip_counts(device)
    except ValueError:
        raise typer.BadParameter(f"--chips takes comma-separated whole numbers, got {chips!r}", param_hint="--chips") from None
    try:
        check_chip_counts(device, counts)
    except TpusimError as e:
        raise typer.BadParameter(str(e), param_hint="--chips") from None
    try:
        with console.status(f"compiling and estimating {model} on {len(counts)} {device} slices..."):
            points = scaling_curve(model, device, counts, batch_per_chip)
    except TpusimError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    if json_out or csv_out:
        import pandas as pd

        frame = pd.DataFrame([asdict(p) for p in points])
        if _export(frame.to_json(orient="records", indent=1), frame.to_csv(index=False), json_out, csv_out):
            return
    unit = "images/s" if model == "resnet50" else "tokens/s"
    spec = (("chips", 0), ("slice", 0), ("global batch", 110), ("step time", 0), (f"throughput ({unit})", 0),
            ("efficiency", 0), ("compute", 140), ("communication", 140), ("exposed comm", 110),
            ("TFLOP/s/chip", 140), ("tpusim wall", 140))
    cols = columns_for(spec, console.width)
    t = Table(title=f"{model} training step on {device}: scaling")
    for col in cols:
        t.add_column(col, justify="right", no_wrap=True)
    for p in points:
        cells = {"chips": str(p.chips), "slice": p.system, "global batch": str(p.global_batch),
                 "tpusim wall": f"{p.wall_s:.2f} s"}
        if p.note:
            cells["step time"] = p.note
        else:
            cells.update({"step time": f"{p.step_s * 1e3:.1f} ms", f"throughput ({unit})": f"{p.throughput:,.0f}",
                          "efficiency": f"{p.efficiency:.0%}", "compute": f"{p.compute_s * 1e3:.1f} ms",
                          "communication": f"{p.communication_s * 1e3:.1f} ms",
                          "exposed comm": f"{p.exposed_communication_s * 1e3:.1f} ms",
                          "TFLOP/s/chip": f"{p.tflops_per_chip:.1f}"})
        t.add_row(*[cells.get(c, "") for c in cols])
    console.print(t)
    if plot:
        console.print(f"plot written to {plot_scaling(points, plot, f'{model} on {device}')}")


@app.command()
def ops(json_out: str = typer.Option(None, "--json", help="write the primitives as JSON here ('-': stdout)"),
        csv_out: str = typer.Option(None, "--csv", help="write the primitives as CSV here ('-': stdout)")) -> None:
    """List the JAX primitives tpusim compiles, with the rules each one's entry gives the pipeline."""
    import pandas as pd
    from rich.table import Table

    from tpusim.ir.primitives import PRIMITIVES

    _writable(json_out, "--json")
    _writable(csv_out, "--csv")
    frame = pd.DataFrame([{"primitive": name, **PRIMITIVES[name].rules()} for name in sorted(PRIMITIVES)])
    if (json_out or csv_out) and _export(frame.to_json(orient="records", indent=1), frame.to_csv(index=False),
                                         json_out, csv_out):
        return
    t = Table(title=f"{len(frame)} primitives (src/tpusim/ir/primitives.py)")
    for column in frame.columns:
        t.add_column(column, no_wrap=column == "primitive", overflow="fold")
    for row in frame.itertuples(index=False):
        t.add_row(*(str(x) for x in row))
    console.print(t)

if __name__ == "__main__":
    app()
