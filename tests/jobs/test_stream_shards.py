"""Smoke test of `bioscan-stream stream` (jobs/stream_shards.py), in process, on a tiny shard set."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from bioscan_stream.schema import DNA, IMAGE, TARGETS
from bioscan_stream.shards.tarwriter import write_tar
from jobs.stream_shards import main


def _shards(root: Path, sizes: tuple[int, ...] = (6, 4)) -> None:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 30, 200)).save(out, format="JPEG")
    number = 0
    for shard, size in enumerate(sizes):
        samples = []
        for _ in range(size):
            samples.append({"__key__": f"K{number:03d}", IMAGE: out.getvalue(), DNA: "ACGT" * 15,
                            TARGETS: json.dumps({"species": number % 3})})  # fmt: skip
            number += 1
        write_tar(root / "val" / f"val-{shard:06d}.tar", samples)


def test_stream_prints_a_sample_and_throughput(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _shards(tmp_path)
    assert main([str(tmp_path), "--split", "val", "--batch-size", "4", "--workers", "2", "--batches", "0"]) == 0
    out = capsys.readouterr().out
    assert "image" in out and "(3, 224, 224) torch.float32" in out and "species" in out
    assert "10 samples in" in out and "samples/s with 2 worker(s)" in out


def test_stream_reports_a_corrupt_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _shards(tmp_path)
    bad = tmp_path / "val" / "val-000001.tar"
    bad.write_bytes(bad.read_bytes()[:700])
    argv = [str(tmp_path), "--split", "val", "--batch-size", "4", "--workers", "0", "--modalities", "dna"]
    assert main(argv) == 1 and "val-000001.tar" in capsys.readouterr().err
    assert main([*argv, "--skip-corrupt"]) == 0 and "corrupt shards skipped: 1" in capsys.readouterr().out
    assert main([str(tmp_path / "missing"), "--split", "val"]) == 1
