"""End to end on a real local Ray: every record lands once, counts add up, reruns are identical and resume.

One `ray.init` is shared by the module (5-13 s here); `convert_release` reuses a running runtime.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import ray
from helpers_release import PACKAGE, inject_faults, make_release

from bioscan_stream.constants import COLUMNS
from bioscan_stream.layout import image_relpath
from bioscan_stream.metadata import read_metadata, write_metadata
from bioscan_stream.shards.convert import JOURNAL_DIR, ConvertConfig, ConvertReport, convert_release, report_summary
from bioscan_stream.shards.verify import verify_shards
from bioscan_stream.storage import list_urls, read_bytes
from bioscan_stream.validate import InvalidRecordError, RejectsReport

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def ray_runtime() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _convert(root: Path, out: Path | str, **options: object) -> ConvertReport:
    return convert_release(ConvertConfig(root=str(root), out=str(out), progress=False, **options))  # type: ignore[arg-type]


def _tar_keys(out: Path) -> dict[str, list[str]]:
    """processid -> the shard paths it appears in, read back from the tars."""
    found: dict[str, list[str]] = {}
    for tar_path in sorted((out / PACKAGE).glob("*/*.tar")):
        with tarfile.open(tar_path) as tar:
            for key in dict.fromkeys(name.split(".", 1)[0] for name in tar.getnames()):
                found.setdefault(key, []).append(tar_path.name)
    return found


def _shard_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.tar"))}


def test_every_record_in_one_shard_or_rejected(tmp_path: Path) -> None:
    root = tmp_path / "release"
    table = make_release(root, samples=64)
    faults = inject_faults(root)
    report = _convert(root, tmp_path / "out")
    in_tars = _tar_keys(tmp_path / "out")
    rejects = RejectsReport.read(tmp_path / "out" / PACKAGE / "rejects.jsonl").rejects
    assert all(len(shards) == 1 for shards in in_tars.values())
    assert {r.processid: r.reason for r in rejects} == {pid: reason for reason, pid in faults.items()}
    assert sorted([*in_tars, *(r.processid for r in rejects)]) == sorted(table["processid"].to_pylist())
    for split, total in report.manifest["totals"].items():
        assert total["written"] + total["rejected"] == total["read"], split
    assert report.manifest["totals"]["bogus"] == {
        "read": 1, "written": 0, "rejected": 1, "rejected_by_reason": {"unknown_split": 1}
    }  # fmt: skip
    assert all(len(entry["shards"]) == 4 for entry in report.manifest["splits"].values())  # min_shards floor
    assert verify_shards(str(tmp_path / "out" / PACKAGE)).ok
    assert verify_shards(str(tmp_path / "out" / "dna")).ok


def test_sample_content_matches_the_source(tmp_path: Path) -> None:
    root = tmp_path / "release"
    make_release(root, samples=24)
    report = _convert(root, tmp_path / "out", splits=("train", "val"), dna=False)
    source = {r["processid"]: r for r in read_metadata(root).to_pylist()}
    vocab = json.loads((tmp_path / "out" / PACKAGE / "vocab.json").read_text())
    shard = tmp_path / "out" / PACKAGE / report.manifest["splits"]["train"]["shards"][0]["path"]
    with tarfile.open(shard) as tar:
        key = tar.getnames()[0].split(".")[0]
        record = source[key]
        assert tar.extractfile(f"{key}.jpg").read() == (root / image_relpath(key, "train", PACKAGE)).read_bytes()  # type: ignore[union-attr]
        assert tar.extractfile(f"{key}.dna.txt").read().decode() == record["dna_barcode"]  # type: ignore[union-attr]
        assert json.loads(tar.extractfile(f"{key}.json").read()) == record  # type: ignore[union-attr]
        targets = json.loads(tar.extractfile(f"{key}.targets.json").read())  # type: ignore[union-attr]
    assert list(record) == list(COLUMNS)
    assert targets["order"] == (vocab["order"].index(record["order"]) if record["order"] else -1)
    assert not (tmp_path / "out" / "dna").exists()


def test_same_seed_byte_identical_other_seed_differs_and_zips_match_tree(tmp_path: Path) -> None:
    make_release(tmp_path / "tree", samples=40, seed=5)
    make_release(tmp_path / "zips", samples=40, seed=5, zipped=True)
    assert not (tmp_path / "zips" / "bioscan5m" / "images").exists()
    _convert(tmp_path / "tree", tmp_path / "a", seed=1)
    _convert(tmp_path / "tree", tmp_path / "b", seed=1)
    _convert(tmp_path / "zips", tmp_path / "z", seed=1)
    _convert(tmp_path / "tree", tmp_path / "c", seed=2)
    a = _shard_bytes(tmp_path / "a")
    assert len(a) > 30
    assert a == _shard_bytes(tmp_path / "b") == _shard_bytes(tmp_path / "z")
    assert a != _shard_bytes(tmp_path / "c")


def test_synthetic_release_from_tree_and_from_official_zips(tmp_path: Path) -> None:
    from bioscan_stream.synth.release import write_release

    table = write_release(tmp_path / "tree", samples=80, seed=3, workers=1)
    write_release(tmp_path / "zips", samples=80, seed=3, zip=True, workers=1)
    assert not (tmp_path / "zips" / "bioscan5m" / "images").exists()
    tree = _convert(tmp_path / "tree", tmp_path / "a")
    _convert(tmp_path / "zips", tmp_path / "b")
    assert _shard_bytes(tmp_path / "a") == _shard_bytes(tmp_path / "b")
    assert sorted(_tar_keys(tmp_path / "a")) == sorted(table["processid"].to_pylist())
    totals = tree.manifest["totals"]
    assert {s: t["read"] for s, t in totals.items() if t["read"]} == dict(Counter(table["split"].to_pylist()))
    assert all(t["written"] == t["read"] and t["rejected"] == 0 for t in totals.values())
    assert verify_shards(str(tmp_path / "a" / PACKAGE)).ok


def test_resume_rewrites_only_unfinished_shards(tmp_path: Path, release: Path) -> None:
    out = tmp_path / "out"
    first = _convert(release, out)
    before = _shard_bytes(out)
    victim = out / PACKAGE / "val" / "val-000001.tar"
    victim.unlink()  # killed before this shard was committed ...
    leftover = victim.with_name(".val-000002.tar.tmp-99999")
    leftover.write_bytes(b"half a tar")  # ... while another was being written
    corrupt = out / PACKAGE / "test" / "test-000000.tar"
    data = bytearray(corrupt.read_bytes())
    data[700] ^= 0xFF  # bit rot inside the first image of a finished shard
    corrupt.write_bytes(bytes(data))
    untouched = out / PACKAGE / "train" / "train-000000.tar"
    mtime = untouched.stat().st_mtime_ns
    second = _convert(release, out)
    assert (second.written, second.reused) == (2, first.written - 2)
    assert not leftover.exists()
    assert _shard_bytes(out) == before
    assert untouched.stat().st_mtime_ns == mtime
    assert second.manifest["splits"] == first.manifest["splits"]
    third = _convert(release, out, min_shards=2)  # another plan: fewer shards, the old extra ones go
    assert sorted(str(p.relative_to(out / PACKAGE)) for p in (out / PACKAGE).glob("*/*.tar")) == sorted(
        s["path"] for e in third.manifest["splits"].values() for s in e["shards"]
    )
    assert len(list((out / PACKAGE / JOURNAL_DIR).glob("*.json"))) == len(list((out / PACKAGE).glob("*/*.tar")))


def test_readers_webdataset_tar_and_ray_data(tmp_path: Path, release: Path) -> None:
    import webdataset as wds

    report = _convert(release, tmp_path / "out", splits=("pretrain", "train"))
    shards = [str(tmp_path / "out" / PACKAGE / s["path"]) for s in report.manifest["splits"]["train"]["shards"]]
    written = report.manifest["totals"]["train"]["written"]
    dataset = wds.WebDataset(shards, shardshuffle=False, nodesplitter=wds.single_node_only, empty_check=False)
    samples = list(dataset)
    assert len(samples) == written and all(s["jpg"][:3] == b"\xff\xd8\xff" for s in samples)
    listed = subprocess.run(["tar", "-tf", shards[0]], check=True, capture_output=True, text=True).stdout.split()
    assert (
        listed[1].endswith(".dna.txt") and len(listed) == 4 * report.manifest["splits"]["train"]["shards"][0]["samples"]
    )
    rows = ray.data.read_webdataset(shards, decoder=None).take_all()
    assert sorted(r["__key__"] for r in rows) == sorted(s["__key__"] for s in samples)
    dna = sorted(str(p) for p in (tmp_path / "out" / "dna" / "pretrain_dna").glob("*.tar"))
    counts = [int(s["count.txt"]) for s in wds.WebDataset(dna, shardshuffle=False, nodesplitter=wds.single_node_only)]
    dna_totals = json.loads((tmp_path / "out" / "dna" / "index.json").read_text())["totals"]["pretrain_dna"]
    assert len(counts) == dna_totals["samples"] < sum(counts) == dna_totals["records"]  # duplicates merged
    assert dna_totals["records"] == report.manifest["totals"]["pretrain"]["read"]


def test_strict_mode_stops_at_the_first_invalid_record(release: Path, tmp_path: Path) -> None:
    faults = inject_faults(release)
    with pytest.raises(InvalidRecordError, match=faults["bad_barcode"]):
        _convert(release, tmp_path / "out", strict=True)
    assert not (tmp_path / "out" / PACKAGE / "index.json").exists()
    table = read_metadata(release)
    write_metadata(table.filter(pc.equal(table["processid"], faults["missing_image"])), release)  # only that record
    with pytest.raises(InvalidRecordError, match=f"{faults['missing_image']}.*missing_image"):  # raised in a Ray task
        _convert(release, tmp_path / "out", strict=True)


@pytest.mark.s3
def test_s3_output(s3_bucket: str, release: Path) -> None:
    out = f"{s3_bucket}/sets/v1"
    task_env = tuple((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))  # workers predate the server
    report = _convert(release, out, splits=("train", "other_heldout"), task_env=task_env)
    assert report.manifest_url == f"{out}/{PACKAGE}/index.json"
    assert json.loads(read_bytes(report.manifest_url))["totals"]["train"]["read"] == 6
    assert verify_shards(f"{out}/{PACKAGE}").ok and verify_shards(f"{out}/dna").ok
    tars = list_urls(out, suffix=".tar")
    dna = json.loads(read_bytes(report.dna_manifest_url or ""))
    assert dna == report.dna_manifest  # what the report carries is what was written
    listed = [f"{out}/{PACKAGE}/{s['path']}" for e in report.manifest["splits"].values() for s in e["shards"]]
    listed += [f"{out}/dna/{s['path']}" for s in dna["splits"]["pretrain_dna"]["shards"]]
    assert tars == sorted(listed) and report.written == len(tars)
    again = _convert(release, out, splits=("train", "other_heldout"), task_env=task_env)
    assert again.written == 0 and again.reused == len(tars)


def test_dna_only_from_a_metadata_only_release(tmp_path: Path) -> None:
    import webdataset as wds

    rows = make_release(tmp_path / "full").to_pylist()
    pretrain = [r for r in rows if r["split"] == "pretrain"]
    pretrain[0]["dna_barcode"] = "ACGTX" + pretrain[0]["dna_barcode"][5:]
    rows[1]["split"] = "bogus"
    root = tmp_path / "metadata-only"
    write_metadata(pa.Table.from_pylist(rows, schema=read_metadata(tmp_path / "full").schema), root)
    report = _convert(root, tmp_path / "out", images=False)
    assert report.manifest is None and report.manifest_url is None and not (tmp_path / "out" / PACKAGE).exists()
    dna_dir = tmp_path / "out" / "dna"
    assert verify_shards(str(dna_dir)).ok
    manifest = json.loads((dna_dir / "index.json").read_text())
    kept = [r for r in rows if r["split"] in ("pretrain", "other_heldout") and r is not pretrain[0]]
    expected = {r["dna_barcode"].rstrip("N") for r in kept} - {""}
    shards = sorted(str(p) for p in dna_dir.glob("pretrain_dna/*.tar"))
    got = [s["dna.txt"].decode() for s in wds.WebDataset(shards, shardshuffle=False, nodesplitter=wds.single_node_only)]
    assert sorted(got) == sorted(expected)
    totals = manifest["totals"]
    assert totals["pretrain"] == {
        "read": len(pretrain),
        "written": len(pretrain) - 1,
        "rejected": 1,
        "rejected_by_reason": {"bad_barcode": 1},
    }
    assert totals["bogus"]["rejected"] == 1 and totals["pretrain_dna"]["records"] == len(kept)
    rejects = RejectsReport.read(dna_dir / "rejects.jsonl")
    assert {(r.processid, r.reason) for r in rejects.rejects} == {
        (pretrain[0]["processid"], "bad_barcode"),
        (rows[1]["processid"], "unknown_split"),
    }
    assert "dna set:" in report_summary(report)
    with pytest.raises(ValueError, match="nothing to write"):
        _convert(root, tmp_path / "out2", images=False, splits=("train",))
