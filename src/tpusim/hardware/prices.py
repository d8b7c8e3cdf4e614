"""Dated, sourced prices per chip-hour (hardware/prices.yaml), and the one a comparison uses."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from tpusim.errors import TpusimError

PRICES = Path(__file__).parent / "prices.yaml"


@dataclass(frozen=True)
class Price:
    chip: str
    cloud: str
    kind: str  # "on-demand", "1-year commitment", ...
    usd: float  # per chip-hour (TPU) or GPU-hour
    date: str
    source: str
    confidence: str = ""


@lru_cache(maxsize=1)
def price_table() -> tuple[Price, ...]:
    return tuple(Price(**row) for row in yaml.safe_load(PRICES.read_text())["rows"])


def price_of(chip: str, overrides: dict[str, float] | None = None, kind: str = "on-demand") -> Price | None:
    """The price a comparison charges for one `chip` for an hour: the user's override, else the
    newest row of that kind (None when nothing is published)."""
    if overrides and chip in overrides:
        usd = overrides[chip]
        if isinstance(usd, bool) or not isinstance(usd, (int, float)) or not usd >= 0:
            raise TpusimError(f"price override for '{chip}' must be a non-negative number of US$ per chip-hour, got {usd!r}")
        return Price(chip, "user", "override", float(usd), "", "given by the user")
    rows = [p for p in price_table() if p.chip == chip and p.kind == kind]
    return max(rows, key=lambda p: p.date) if rows else None
