"""The HTML report: one self-contained file (styles, script and data inline; nothing fetched),
readable offline and in a notebook. report_data.py gathers what it shows; assets/report.js
draws it in the browser."""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tpusim.report.report_data import report_data

if TYPE_CHECKING:
    from tpusim.api import Compiled
    from tpusim.comparison import Comparison

# (section id, title, what it shows): the page's views, in order.
VIEWS = (
    ("overview", "Overview", "Step time, utilization, what bounds the step, and whether it fits."),
    ("ops", "Op profile", "Every kernel; 'wasted' is its time beyond the roofline's (its FLOPs at peak or its bytes at full HBM bandwidth, whichever is longer). Click a column to sort."),
    ("timeline", "Timeline", "What each engine does over the step (XProf's trace viewer lines: XLA Ops, Async XLA Ops), as the model lays it out."),
    ("roofline", "Roofline", "Every kernel at its arithmetic intensity and achieved FLOP/s under the chip's compute and HBM roofs."),
    ("memory", "Memory viewer", "HBM in use over the program by kind of buffer, and the buffers live at the peak."),
    ("stages", "Compiled stages", "The traced jaxpr, the fused graph and the program of kernels, linked to the layers and lines of your code."),
    ("collectives", "Collectives", "Communication per mesh axis, and how much of it compute does not hide."),
    ("systolic", "Inside the {unit}: the systolic array", "A small matmul from your model, cycle by cycle."),
    ("blocks", "Inside the {unit}: folds and VMEM blocks", "How a matmul is cut into blocks that fit VMEM and folds that fit the array, and what padding costs."),
    ("bf16", "Inside the {unit}: bf16 rounding", "What the matrix unit's bf16 inputs do to your model's real values."),
    ("compare", "Compare devices", "The same step on other devices."),
)


def _asset(name: str) -> str:
    return resources.files("tpusim.report").joinpath("assets", name).read_text()


def _views(kind: str, matrix_unit: str) -> list[tuple[str, str, str]]:
    """The views with this device's words: a GPU has tensor cores, not an MXU, so its learner
    views say they show how a TPU's MXU would run the same matmuls."""
    out = []
    for sid, name, hint in VIEWS:
        if "{unit}" in name:
            name = name.format(unit="MXU") if kind == "tpu" else name.replace("Inside the {unit}", "On a TPU's MXU")
            if kind != "tpu":
                hint += f" ({matrix_unit} work differently; this is how a TPU would run the same matmul.)"
        out.append((sid, name, hint))
    return out


def render_html(data: dict[str, Any]) -> str:
    meta = data["meta"]
    title = f"tpusim report: {meta['model']} on {meta['device']}"
    views = _views(meta["kind"], meta["matrix_unit"])
    nav = "".join(f'<a href="#{sid}">{html.escape(name.split(": ")[-1])}</a>' for sid, name, _ in views)
    sections = "".join(f'<section id="{sid}" data-view="{sid}"><h2>{html.escape(name)}</h2><p class="hint">{html.escape(hint)}</p>'
                       f'<div class="content"></div></section>' for sid, name, hint in views)
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    subtitle = (f"{meta['chip']} &middot; precision {html.escape(meta['precision'])} &middot; "
                "estimates from tpusim's hardware model, not measurements")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_asset("report.css")}</style></head>'
            f'<body><header><h1>{html.escape(title)}</h1><span style="font-size:12px;color:#cfd8ea">{subtitle}</span>'
            f'<nav>{nav}</nav></header><main>{sections}</main>'
            f'<script type="application/json" id="report-data">{payload}</script><script>{_asset("report.js")}</script></body></html>')


class Report:
    """An HTML report of a compiled model: `save(path)`, or display it in a notebook."""

    def __init__(self, html_text: str, path: Path | None = None) -> None:
        self.html = html_text
        self.path = path

    def save(self, path: str | Path) -> Path:
        self.path = Path(path)
        self.path.write_text(self.html, encoding="utf-8")
        return self.path

    def _repr_html_(self) -> str:
        # an iframe keeps the report's styles and script apart from the notebook's
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" style="width:100%;height:900px;border:1px solid #ddd">'
                "</iframe>")

    def __repr__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"Report({len(self.html) / 1e6:.2f} MB of HTML{where})"


def build_report(compiled: "Compiled", path: str | Path | None = None, inputs: list[Any] | None = None,
                 comparison: "Comparison | None" = None) -> Report:
    report = Report(render_html(report_data(compiled, inputs, comparison)))
    if path is not None:
        report.save(path)
    return report
