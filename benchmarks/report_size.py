"""The HTML report of ResNet-50 on TPU v5e: file size, time to build it on this machine, and time
for headless Chromium to load and draw every view (when Debian's chromium and Playwright are
installed).

Run: python benchmarks/report_size.py   (targets: <= 5 MB, renders in < 2 s)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import tpusim  # noqa: E402
from tpusim.models import resnet50  # noqa: E402
from tpusim.validation.memory_programs import _keras_train, _resnet50  # noqa: E402


def render_seconds(path: Path) -> tuple[float, float] | None:
    """(page load to every view drawn, the script's own drawing time) in seconds."""
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if chromium is None:
        return None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                                                     "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        t = time.perf_counter()
        page.goto(path.as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=60_000)
        wall = time.perf_counter() - t
        script = float(page.get_attribute("body", "data-render-ms")) / 1e3
        browser.close()
    return wall, script


def main() -> None:
    model = resnet50()
    x = jax.ShapeDtypeStruct((128, 224, 224, 3), np.float32)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    train = _keras_train("resnet50", _resnet50, 128, "sgd")()
    keras.mixed_precision.set_global_policy("float32")
    rows = [("ResNet-50 forward, batch 128", lambda: tpusim.compile(model, x, device="v5e")),
            ("ResNet-50 SGD training step, batch 128, mixed_bfloat16",
             lambda: tpusim.compile(train.fn, *train.args, device="v5e", donate_argnums=train.donate_argnums))]
    table = Table(title="HTML report on TPU v5e (targets: <= 5 MB, renders in < 2 s)")
    for col in ("workload", "kernels", "build s", "size MB", "load + draw s", "drawing s"):
        table.add_column(col, justify="left" if col == "workload" else "right")
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in rows:
            compiled = build()
            t = time.perf_counter()
            report = compiled.report(Path(tmp) / "report.html")
            built = time.perf_counter() - t
            shown = render_seconds(report.path)
            table.add_row(name, str(len(compiled.program.kernels)), f"{built:.2f}", f"{len(report.html.encode()) / 1e6:.2f}",
                          f"{shown[0]:.2f}" if shown else "no chromium", f"{shown[1]:.3f}" if shown else "-")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
