"""Fixtures of the shard tests: a fresh 48-record release in the official layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_release import make_release


@pytest.fixture
def release(tmp_path: Path) -> Path:
    root = tmp_path / "release"
    make_release(root)
    return root
