"""Command line: `tpusim devices`, `tpusim demo`, `tpusim ops`."""

from __future__ import annotations

import typer
from rich.console import Console

from tpusim.errors import TpusimError

app = typer.Typer(help="tpusim: a software TPU for JAX and Keras models.", no_args_is_help=True, add_completion=False)
console = Console()


@app.command()
def devices() -> None:
    """List the chips in the catalog."""
    from tpusim.hardware.chip import catalog
    from tpusim.report.tables import devices_table

    console.print(devices_table(catalog()))


@app.command()
def demo(device: str = typer.Option("v4", help="chip name or chip YAML path"),
         batch: int = typer.Option(32, help="batch size")) -> None:
    """Compile and run the classic CNN on a simulated TPU and check it against JAX."""
    from tpusim.demo import run_demo

    try:
        result = run_demo(device, batch, console)
    except TpusimError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1)
    if result["err_bf16"] >= 1e-3:
        raise typer.Exit(1)


@app.command()
def ops() -> None:
    """List the JAX primitives tpusim compiles."""
    from tpusim.ir.opset import CATEGORY

    for prim in sorted(CATEGORY):
        console.print(f"{prim:28s} {CATEGORY[prim].value}")


if __name__ == "__main__":
    app()
