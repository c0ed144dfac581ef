"""Tiny shard sets built on the fly for the stream tests: 32x32 JPEGs, 60-bp DNA, the converter's manifest shape."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from PIL import Image

from bioscan_stream.schema import DNA, IMAGE, INDEX_FILE, METADATA, TARGETS, shard_name
from bioscan_stream.shards.tarwriter import write_tar

#: 7 shards of unequal sizes (47 samples): divides evenly by neither 2 workers nor 3 ranks x 2 workers.
UNEVEN = (9, 3, 11, 5, 7, 2, 10)


def jpeg(rng: random.Random, size: int = 32) -> bytes:
    image = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def sample(number: int, rng: random.Random) -> dict[str, str | bytes]:
    key = f"PID{number:05d}"
    targets = {"species": number % 5, "genus": number % 3, "order": 0}
    return {
        "__key__": key,
        IMAGE: jpeg(rng),
        DNA: "".join(rng.choice("ACGT") for _ in range(60)),
        METADATA: json.dumps({"processid": key}),
        TARGETS: json.dumps(targets),
    }


def write_shard_set(
    root: Path, sizes: Sequence[int] = UNEVEN, *, split: str = "train", manifest: bool = True
) -> list[str]:
    """Shards `<root>/<split>/<split>-NNNNNN.tar` (+ `index.json`); returns all sample keys in write order."""
    rng = random.Random(0)
    keys: list[str] = []
    entries = []
    for number, size in enumerate(sizes):
        samples = [sample(len(keys) + i, rng) for i in range(size)]
        keys += [str(s["__key__"]) for s in samples]
        info = write_tar(root / split / shard_name(split, number), samples)
        entries.append(
            {"path": f"{split}/{info.name}", "samples": info.samples, "bytes": info.bytes, "sha256": info.sha256}
        )
    if manifest:
        index = {"splits": {split: {"samples": len(keys), "shards": entries}}}
        (root / INDEX_FILE).write_text(json.dumps(index))
    return keys


@pytest.fixture
def make_shard_set() -> Callable[..., list[str]]:
    """The `write_shard_set` builder, for tests that need other sizes, splits or no manifest."""
    return write_shard_set


@pytest.fixture
def shard_set(tmp_path: Path) -> tuple[Path, list[str]]:
    """A 7-shard, 47-sample train split with a manifest."""
    root = tmp_path / "cropped_256"
    return root, write_shard_set(root)
