"""Session fixtures of the job tests: the session's synthetic release converted to shards by `jobs.convert`."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from helpers_dna import with_stub_images

from jobs import convert

#: The splits the DNA jobs read: the DNA-only set's sources and the probes' train / test / test_unseen.
SYNTH_SPLITS = ("pretrain", "other_heldout", "train", "test", "test_unseen")


@pytest.fixture(scope="session")
def synth_shards(release_20k: tuple[Path, pa.Table], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT of `bioscan-stream shards` on the 20k synthetic release: `OUT/dna` and `OUT/cropped_256` (~15 s)."""
    release, table = release_20k
    tmp = tmp_path_factory.mktemp("synth20k-shards")
    root = with_stub_images(release, tmp / "release", table, splits=SYNTH_SPLITS[2:])
    args = [str(root), str(tmp / "out"), "--splits", *SYNTH_SPLITS, "--workers", "2", "--no-progress"]
    assert convert.main(args) == 0
    return tmp / "out"
