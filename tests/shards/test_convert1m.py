"""A BIOSCAN-1M release through `convert_release` on a real local Ray: auto-detected, stored by partition group,
every record once or rejected by name, reruns identical; the stream selects a partitioning's split exactly once."""

from __future__ import annotations

import json
import shutil
import tarfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import ray

from bioscan_stream.release1m import HDF5_GROUP, PARTITIONINGS, read_metadata_1m, vocabularies_1m
from bioscan_stream.shards.convert import ConvertConfig, ConvertReport, convert_release, report_summary
from bioscan_stream.shards.verify import verify_shards
from bioscan_stream.stream import BioscanStream
from bioscan_stream.validate import RejectsReport
from bioscan_stream.vocab import encode_labels

pytestmark = pytest.mark.ray
PACKAGE = "cropped_256"


@pytest.fixture(scope="module", autouse=True)
def ray_runtime() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def converted(
    release_1m: tuple[Path, pa.Table], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, ConvertReport]:
    out = tmp_path_factory.mktemp("shards1m")
    report = convert_release(ConvertConfig(root=str(release_1m[0]), out=str(out), min_shards=1, progress=False))
    return out, report


def _tar_keys(folder: Path) -> Counter[str]:
    keys: Counter[str] = Counter()
    for path in sorted(folder.glob("*/*.tar")):
        with tarfile.open(path) as tar:
            keys.update(list(dict.fromkeys(name.split(".", 1)[0] for name in tar.getnames())))
    return keys


def test_conversion_keeps_the_guarantees(
    release_1m: tuple[Path, pa.Table], converted: tuple[Path, ConvertReport]
) -> None:
    root, table = release_1m
    out, report = converted
    manifest = report.manifest
    assert manifest is not None and manifest["release"] == "bioscan1m" and report.dna_manifest is None
    assert _tar_keys(out / PACKAGE) == Counter(table["processid"].to_pylist())  # each record in one shard
    assert sum(t["written"] for t in manifest["totals"].values()) == table.num_rows
    assert all(t["written"] + t["rejected"] == t["read"] for t in manifest["totals"].values())
    assert set(manifest["partitionings"]) == set(PARTITIONINGS)
    assert verify_shards(str(out / PACKAGE)).ok
    train = int(pc.sum(pc.equal(table["large_insect_order"], "train")).as_py())
    assert f"large_insect_order    train {train:,d}  validation" in report_summary(report)
    vocab = json.loads((out / PACKAGE / "vocab.json").read_text())
    assert vocab == vocabularies_1m(read_metadata_1m(root))
    before = {p: p.read_bytes() for p in sorted((out / PACKAGE).glob("*/*.tar"))}
    again = convert_release(ConvertConfig(root=str(root), out=str(out), min_shards=1, progress=False))
    assert again.reused == len(before) and again.written == 0
    assert {p: p.read_bytes() for p in sorted((out / PACKAGE).glob("*/*.tar"))} == before


@pytest.mark.parametrize("partitioning", ["large_insect_order", "small_diptera_family"])
def test_stream_selects_a_partitioning_split_exactly_once(
    release_1m: tuple[Path, pa.Table], converted: tuple[Path, ConvertReport], partitioning: str
) -> None:
    root, _ = release_1m
    out, _ = converted
    metadata = read_metadata_1m(root)
    vocab = vocabularies_1m(metadata)
    train = metadata.filter(pc.equal(metadata[partitioning], "train"))
    expected = dict(zip(train["processid"].to_pylist(), encode_labels(train["order"], vocab["order"]), strict=True))
    seen: Counter[str] = Counter()
    for rank in range(2):  # two ranks together read every record of the split once
        stream = BioscanStream(
            str(out / PACKAGE), partitioning=partitioning, split="train", modalities=(), targets=("order", "family"),
            batch_size=16, rank=rank, world_size=2, seed=1,
        )  # fmt: skip
        assert stream.num_samples == train.num_rows
        for batch in stream:
            seen.update(batch["__key__"])
            codes = [expected[k] for k in batch["__key__"]]
            assert np.array_equal(batch["order"].numpy(), codes)
    assert seen == Counter(list(expected))
    with pytest.raises(KeyError, match="unknown partitioning"):
        BioscanStream(str(out / PACKAGE), partitioning="huge_insect_order", split="train")
    val = BioscanStream(str(out / PACKAGE), partitioning=partitioning, split="val", modalities=(), targets=())
    assert val.num_samples == int(pc.sum(pc.equal(metadata[partitioning], "validation")).as_py())


def test_corrupt_hdf5_entry_and_missing_part_file_are_named_rejects(
    release_1m: tuple[Path, pa.Table], tmp_path: Path
) -> None:
    import h5py

    source, table = release_1m
    rows = table.select(["processid", "chunk_number", "image_file"]).to_pylist()
    hdf5_only = tmp_path / "hdf5"  # the HDF5 file alone, one entry overwritten with a truncated JPEG
    (hdf5_only / "bioscan1m").mkdir(parents=True)
    for name in ("BIOSCAN_Insect_Dataset_metadata.tsv", "cropped_256.hdf5"):
        shutil.copy(source / "bioscan1m" / name, hdf5_only / "bioscan1m" / name)
    with h5py.File(hdf5_only / "bioscan1m" / "cropped_256.hdf5", "r+") as handle:
        data = handle[HDF5_GROUP][rows[5]["image_file"]][()]
        del handle[HDF5_GROUP][rows[5]["image_file"]]
        handle[HDF5_GROUP].create_dataset(rows[5]["image_file"], data=data[: len(data) // 2])
    tree_only = tmp_path / "tree"  # the tree alone, without its last part folder
    shutil.copytree(source / "bioscan1m" / "images", tree_only / "bioscan1m" / "images")
    shutil.copy(source / "bioscan1m" / "BIOSCAN_Insect_Dataset_metadata.tsv", tree_only / "bioscan1m")
    last = rows[-1]["chunk_number"]
    shutil.rmtree(tree_only / "bioscan1m" / "images" / PACKAGE / f"part{last}")
    for root, expected in (
        (hdf5_only, {rows[5]["processid"]: "unreadable_image"}),
        (tree_only, {r["processid"]: "missing_image" for r in rows if r["chunk_number"] == last}),
    ):
        report = convert_release(ConvertConfig(root=str(root), out=str(root / "out"), min_shards=1, progress=False))
        rejects = RejectsReport.read(root / "out" / PACKAGE / "rejects.jsonl").rejects
        assert {r.processid: r.reason for r in rejects} == expected
        assert all(f"part{last}/" in r.detail for r in rejects if r.reason == "missing_image")
        assert all("truncated JPEG" in r.detail for r in rejects if r.reason == "unreadable_image")
        assert _tar_keys(root / "out" / PACKAGE) + Counter(list(expected)) == Counter(table["processid"].to_pylist())
        assert report.manifest is not None
        assert all(t["written"] + t["rejected"] == t["read"] for t in report.manifest["totals"].values())


def test_resume_after_a_kill_rewrites_only_the_unfinished_shard(
    release_1m: tuple[Path, pa.Table], converted: tuple[Path, ConvertReport], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(converted[0], out)
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.tar"))}
    victim = sorted((out / PACKAGE).glob("p-*/*.tar"))[3]
    victim.unlink()  # killed before this shard was committed ...
    leftover = victim.with_name(f".{victim.name}.4242.tmp")
    leftover.write_bytes(b"half a tar")  # ... while it was being written
    again = convert_release(ConvertConfig(root=str(release_1m[0]), out=str(out), min_shards=1, progress=False))
    assert (again.written, again.reused) == (1, len(before) - 1)
    assert {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.tar"))} == before
    assert not leftover.exists()
