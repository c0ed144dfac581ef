"""`jobs.convert` and `jobs.verify_shards`: in-process smoke runs, and one real `ray start` + `ray job submit`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers_ray import RayHead
from helpers_release import PACKAGE, inject_faults, make_release

from jobs import convert, verify_shards

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One in-process run of the job (embedded Ray, 2 workers) on a release with four broken records."""
    tmp = tmp_path_factory.mktemp("convert-job")
    make_release(tmp / "release", samples=40)
    inject_faults(tmp / "release")
    code = convert.main(
        [str(tmp / "release"), str(tmp / "out"), "--workers", "2", "--shard-size", "64KB", "--no-progress"]
    )
    assert code == 0
    return tmp / "out"


def test_parse_size() -> None:
    assert convert.parse_size("128MB") == 128 << 20
    assert convert.parse_size("1.5 kb") == 1536
    assert convert.parse_size("4096") == 4096
    with pytest.raises(Exception, match="not a size"):
        convert.parse_size("lots")


def test_main_converts_and_verify_passes(converted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads((converted / PACKAGE / "index.json").read_text())
    assert manifest["parameters"]["shard_bytes"] == 64 << 10
    assert sum(t["rejected"] for t in manifest["totals"].values()) == 4
    assert verify_shards.main([str(converted / PACKAGE), str(converted / "dna")]) == 0
    assert "OK" in capsys.readouterr().out


def test_verify_out_checks_every_shard_set_under_it(
    converted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert verify_shards.main([str(converted)]) == 0
    out = capsys.readouterr().out
    assert f"{converted / PACKAGE}: " in out and f"{converted / 'dna'}: " in out and out.count(": OK") == 2
    copy = tmp_path / "out"
    shutil.copytree(converted, copy)
    (copy / "dna" / "pretrain_dna" / "pretrain_dna-000000.tar").unlink()
    assert verify_shards.main([str(copy)]) == 1
    captured = capsys.readouterr()
    assert f"{copy / PACKAGE}: " in captured.out and "pretrain_dna-000000.tar: missing" in captured.err
    assert verify_shards.main([str(tmp_path / "nothing")]) == 1
    assert "no shard set" in capsys.readouterr().err


def test_verify_names_a_bad_shard(converted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(converted / PACKAGE), str(copy)], check=True)
    shard = copy / "val" / "val-000001.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 1
    shard.write_bytes(bytes(data))
    assert verify_shards.main([str(copy)]) == 1
    err = capsys.readouterr().err
    assert "val/val-000001.tar" in err and "sha256" in err


def test_strict_job_fails_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(tmp_path / "release", samples=16)
    faults = inject_faults(tmp_path / "release")
    assert convert.main([str(tmp_path / "release"), str(tmp_path / "out"), "--strict", "--no-progress"]) == 1
    assert faults["bad_barcode"] in capsys.readouterr().err


def test_dna_only_needs_no_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(tmp_path / "release", samples=16)
    shutil.rmtree(tmp_path / "release" / "bioscan5m" / "images")  # a metadata-only download
    args = [str(tmp_path / "release"), str(tmp_path / "out"), "--dna-only", "--workers", "1", "--no-progress"]
    assert convert.main(args) == 0
    assert "dna set:" in capsys.readouterr().out and not (tmp_path / "out" / PACKAGE).exists()
    assert verify_shards.main([str(tmp_path / "out" / "dna")]) == 0
    assert convert.main([*args, "--splits", "train"]) == 1
    assert "nothing to write" in capsys.readouterr().err


def test_ray_job_submit_round_trip(ray_head: RayHead, tmp_path: Path) -> None:
    make_release(tmp_path / "release", samples=24)
    out = tmp_path / "out"
    command = ["python", "-m", "jobs.convert", str(tmp_path / "release"), str(out), "--splits", "train", "val"]
    done = ray_head.submit([*command, "--no-progress"], working_dir=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout
    manifest = json.loads((out / PACKAGE / "index.json").read_text())
    assert list(manifest["splits"]) == ["train", "val"]
    assert manifest["totals"]["train"]["written"] == 3
    assert verify_shards.main([str(out / PACKAGE)]) == 0
