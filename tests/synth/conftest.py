"""Session fixtures of the synthetic-release tests: the world behind the 20k release (`release_20k` is in
tests/conftest.py, shared with the zoo and job tests)."""

from __future__ import annotations

import pytest

from bioscan_stream.synth.records import World, build_world

SAMPLES = 20_000  # = tests/conftest.py SYNTH_SAMPLES


@pytest.fixture(scope="session")
def world_20k() -> World:
    """The world behind the 20k release (same seed), for checks against the true taxonomy."""
    return build_world(SAMPLES, seed=0)
