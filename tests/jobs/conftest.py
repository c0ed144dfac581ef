"""Session fixtures of the job tests: the session's synthetic release converted to shards by `jobs.convert`."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from helpers_dna import with_stub_images

from jobs import convert

#: The splits the DNA jobs read: the DNA-only set's sources and the probes' train / test / test_unseen.
SYNTH_SPLITS = ("pretrain", "other_heldout", "train", "test", "test_unseen")


#: Records of the release the slow probe test reads: its test_unseen has ~28 species (the 20k release's: 5).
PROBE_SAMPLES = 100_000


def _convert(release: Path, table: pa.Table, tmp: Path) -> Path:
    """`jobs.convert` of `release` (stub images for the probe splits) into `tmp/out`."""
    root = with_stub_images(release, tmp / "release", table, splits=SYNTH_SPLITS[2:])
    args = [str(root), str(tmp / "out"), "--splits", *SYNTH_SPLITS, "--workers", "2", "--no-progress"]
    assert convert.main(args) == 0
    return tmp / "out"


@pytest.fixture(scope="session")
def synth_shards(release_20k: tuple[Path, pa.Table], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT of `bioscan-stream shards` on the 20k synthetic release: `OUT/dna` and `OUT/cropped_256` (~15 s)."""
    release, table = release_20k
    return _convert(release, table, tmp_path_factory.mktemp("synth20k-shards"))


@pytest.fixture(scope="session")
def synth_shards_100k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same for a metadata-only 100k release (seed 0), for the probe comparison that needs unseen species."""
    from bioscan_stream.synth.release import write_release

    tmp = tmp_path_factory.mktemp("synth100k")
    table = write_release(tmp / "source", samples=PROBE_SAMPLES, seed=0, images=False)
    return _convert(tmp / "source", table, tmp)
