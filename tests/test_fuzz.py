"""Seeded random programs (tpusim.validation.fuzz) against JAX: none may crash with an untyped
error or disagree with JAX. 200 cases here, in 8 chunks; more on demand with
`python -m tpusim.validation.fuzz --cases 1000`."""

from __future__ import annotations

import pytest

from tpusim.validation.fuzz import run_case

CHUNKS, PER_CHUNK = 8, 25


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_random_programs_match_jax(chunk):
    cases = [run_case(seed) for seed in range(chunk * PER_CHUNK, (chunk + 1) * PER_CHUNK)]
    bad = [c for c in cases if c.outcome in ("crash", "mismatch")]
    assert not bad, "\n\n".join(f"seed {c.seed}: {c.outcome}: {c.detail}\n{c.source}" for c in bad)
    assert sum(c.outcome == "match" for c in cases) >= PER_CHUNK * 0.9  # the generator makes real programs


def test_a_found_kernel_order_bug_stays_fixed():
    """Seed 1129 made a loop kernel that read a deferred value (a concatenation of inputs) before
    computing it: KeyError 'compiler bug: kernel order'."""
    assert run_case(1129).outcome == "match"
