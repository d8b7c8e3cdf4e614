"""Peak HBM of tpusim's memory programs as XLA:TPU assigns it (development-time oracle).

Needs libtpu, which tpusim never depends on: in a separate venv,
    python -m venv /tmp/tpuvenv && /tmp/tpuvenv/bin/pip install "jax[tpu]" keras -e .
    TPU_SKIP_MDS_QUERY=1 /tmp/tpuvenv/bin/python benchmarks/xla_memory_oracle.py v4:2x2x1 > xla.yaml
No TPU is used: the topology is described, and XLA compiles for its first device (a sharded
program for a mesh over its first devices, and reports one device's peak). The YAML it prints is
what `src/tpusim/validation/data/xla_memory.yaml` holds.
"""

from __future__ import annotations

import datetime
import os
import sys

os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("KERAS_BACKEND", "jax")

import contextlib  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from jax.experimental import topologies  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding  # noqa: E402

from tpusim.validation.memory_programs import PROGRAMS  # noqa: E402


def main(topology: str, names: list[str]) -> None:
    import importlib.metadata as md

    devices = topologies.get_topology_desc(platform="tpu", topology_name=topology).devices
    device = devices[0]
    rows = {}
    for name, build in PROGRAMS.items():
        if names and name not in names:
            continue
        p = build()
        context = contextlib.nullcontext()
        if p.mesh:
            mesh = Mesh(np.array(devices[:int(np.prod(list(p.mesh.values())))]).reshape(tuple(p.mesh.values())),
                        tuple(p.mesh))
            context = jax.sharding.set_mesh(mesh)
            is_spec = lambda x: x is None or isinstance(x, PartitionSpec)  # noqa: E731
            shardings = jax.tree.map(lambda sp, sub: jax.tree.map(lambda _: NamedSharding(mesh, sp or PartitionSpec()), sub),
                                     tuple(p.in_specs), tuple(p.args), is_leaf=is_spec)
            args = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), p.args, shardings)
        else:
            placed = SingleDeviceSharding(device)
            args = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=placed), p.args)
        with context:
            m = jax.jit(p.fn, donate_argnums=p.donate_argnums).lower(*args).compile().memory_analysis()
        rows[name] = {"peak_bytes": int(m.peak_memory_in_bytes), "argument_bytes": int(m.argument_size_in_bytes),
                      "output_bytes": int(m.output_size_in_bytes), "temp_bytes": int(m.temp_size_in_bytes),
                      "alias_bytes": int(m.alias_size_in_bytes)}
        print(name, rows[name], file=sys.stderr, flush=True)
    doc = {"source": f"XLA:TPU memory_analysis(), libtpu {md.version('libtpu')}, jax {jax.__version__}, "
                     f"topology {topology} ({device.device_kind}), compiled {datetime.date.today()}",
           "device": device.device_kind, "programs": rows}
    yaml.safe_dump(doc, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "v4:2x2x1", sys.argv[2:])
