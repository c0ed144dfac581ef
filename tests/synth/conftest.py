"""Session fixtures of the synthetic-release tests: one 20k-record world and its metadata-only release."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from bioscan_stream.synth.records import World, build_world
from bioscan_stream.synth.release import write_release

SAMPLES = 20_000


@pytest.fixture(scope="session")
def world_20k() -> World:
    """The world behind the 20k release (same seed), for checks against the true taxonomy."""
    return build_world(SAMPLES, seed=0)


@pytest.fixture(scope="session")
def release_20k(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    """A metadata-only 20k release (~8 s), written once per session: its root and table."""
    root = tmp_path_factory.mktemp("synth20k")
    return root, write_release(root, samples=SAMPLES, seed=0, images=False)
