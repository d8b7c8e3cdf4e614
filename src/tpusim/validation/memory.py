"""Peak HBM: tpusim's buffer assignment against XLA:TPU's own, program by program.

XLA's numbers (`data/xla_memory.yaml`) come from `memory_analysis().peak_memory_in_bytes` of
the same functions compiled by libtpu for a described TPU (benchmarks/xla_memory_oracle.py; no
TPU and no libtpu needed to read them). Nothing here is fitted: the check is of the mechanism
(liveness, donation, in-place updates, fusion decisions that decide what is stored).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tpusim.validation.memory_programs import PROGRAMS

XLA_MEMORY = Path(__file__).parent / "data" / "xla_memory.yaml"


@dataclass(frozen=True)
class MemoryCheck:
    name: str
    what: str
    xla_bytes: int
    tpusim_bytes: int
    device: str

    @property
    def error(self) -> float:
        return self.tpusim_bytes / self.xla_bytes - 1

    def same_verdict(self, capacity: int) -> bool:
        """Would both say the program fits (or does not) in `capacity` bytes of HBM?"""
        return (self.xla_bytes <= capacity) == (self.tpusim_bytes <= capacity)


def xla_reference() -> dict[str, Any]:
    return yaml.safe_load(XLA_MEMORY.read_text())


def check(name: str, device: str = "v4") -> MemoryCheck:
    """Compile program `name` with tpusim (memory check off: the verdict is compared, not raised),
    with attention as XLA compiled the same plain JAX function (score matrices in HBM). A sharded
    program runs on the slice of `device` its mesh needs and is compared per device."""
    import math

    from tpusim.api import compile as tpu_compile
    from tpusim.distribute.scaling import slice_name

    ref = xla_reference()
    p = PROGRAMS[name]()
    target = slice_name(device, math.prod(p.mesh.values())) if p.mesh else device
    c = tpu_compile(p.fn, *p.args, device=target, donate_argnums=p.donate_argnums, check_memory=False,
                    attention="xla", mesh=p.mesh, in_specs=p.in_specs)
    return MemoryCheck(name, p.what, int(ref["programs"][name]["peak_bytes"]), c.program.peak_hbm_bytes, ref["device"])


def check_all(device: str = "v4") -> list[MemoryCheck]:
    return [check(name, device) for name in xla_reference()["programs"]]
