"""official: the per-file reader gives the stream's sample format, sample for sample."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from PIL import Image

from bioscan_stream.layout import image_relpath
from bioscan_stream.metadata import write_metadata
from bioscan_stream.schema import DNA, IMAGE, TARGETS
from bioscan_stream.shards.tarwriter import write_tar
from bioscan_stream.stream import BioscanStream
from bioscan_stream.stream.official import OfficialTree, make_official_loader

SPECIES = ("sp_b", None, "sp_a", "sp_c")


def _release(root: Path, n: int = 12) -> list[dict[str, str | None]]:
    rng = random.Random(1)
    records = []
    for i in range(n):
        split = ("val", "train")[i % 2]
        record = {"processid": f"P{i:03d}-1", "species": SPECIES[i % 4], "split": split,
                  "dna_barcode": "".join(rng.choice("ACGT") for _ in range(60))}  # fmt: skip
        path = root / image_relpath(str(record["processid"]), split, "cropped_256")
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.new("RGB", (40, 30), tuple(rng.randrange(256) for _ in range(3)))
        out = io.BytesIO()
        image.save(out, format="JPEG")
        path.write_bytes(out.getvalue())
        records.append(record)
    write_metadata(pa.Table.from_pylist(records), root)
    return records


def test_official_tree_matches_the_stream_sample_for_sample(tmp_path: Path) -> None:
    records = _release(tmp_path)
    tree = OfficialTree(tmp_path, "val", targets=("species",), batch_size=6, transform="eval", image_size=16)
    assert len(tree) == 6
    vocabulary = sorted(s for s in SPECIES if s)  # global over all splits, sorted; missing = -1
    samples = []
    for index in range(len(tree)):
        raw = tree.raw(index)
        record = records[2 * index]
        assert raw[IMAGE] == (tmp_path / raw["__url__"]).read_bytes() and raw[DNA].decode() == record["dna_barcode"]
        code = vocabulary.index(record["species"]) if record["species"] else -1
        assert json.loads(raw[TARGETS]) == {"species": code}
        samples.append({k: v for k, v in raw.items() if k != "__url__"})
    write_tar(tmp_path / "shards" / "val" / "val-000000.tar", samples)
    stream = BioscanStream(str(tmp_path / "shards" / "val" / "val-000000.tar"), "val", batch_size=6, shuffle_buffer=0,
                           transform="eval", image_size=16)  # fmt: skip
    expected = next(iter(stream))
    batch = next(iter(make_official_loader(tree, num_workers=0)))
    assert batch["__key__"] == expected["__key__"]
    for name in ("image", "dna", "dna_mask", "species"):
        assert torch.equal(batch[name], expected[name]), name
    with pytest.raises(ValueError, match="count"):
        OfficialTree(tmp_path, "val", modalities=("count",))
