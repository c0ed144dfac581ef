"""Smoke tests of `bioscan-stream pretrain-dna` (jobs/pretrain_barcodebert.py), in-process and on Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_dna import make_barcodes, write_dna_shards

from jobs.pretrain_barcodebert import main

TINY_ARGS = [
    "--model",
    "4-2-2",
    "--set",
    "hidden_size=32",
    "--set",
    "intermediate_size=64",
    "--set",
    "max_len=120",
    "--batch-size",
    "8",
    "--log-every",
    "2",
    "--checkpoint-every",
    "4",
]


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_pretrain_from_dna_shards_in_process(tmp_path: Path) -> None:
    shards = write_dna_shards(
        tmp_path, [s for s, _, _ in make_barcodes(genera=2, species=2, per_species=4)]
    )  # 16 barcodes
    run = tmp_path / "run"
    assert main([str(shards), "--output", str(run), "--workers", "0", "--epochs", "3", *TINY_ARGS]) == 0
    assert _steps(run) == [2, 4, 6]  # 16 sequences / batch 8 = 2 steps per epoch, every sequence read once
    assert (run / "model" / "tokenizer_config.json").exists() and (run / "loss_curve.png").exists()
    # a rerun with more epochs resumes from the checkpoint instead of starting over
    assert main([str(shards), "--output", str(run), "--workers", "0", "--epochs", "4", *TINY_ARGS]) == 0
    assert _steps(run) == [2, 4, 6, 8]


def test_pretrain_from_a_sequence_file(tmp_path: Path) -> None:
    seqs = tmp_path / "seqs.txt"
    seqs.write_text("\n".join(s for s, _, _ in make_barcodes(genera=1, species=2, per_species=4)) + "\n")
    run = tmp_path / "run"
    assert main(["--sequences", str(seqs), "--output", str(run), "--workers", "0", "--max-steps", "3", *TINY_ARGS]) == 0
    assert _steps(run)[-1] == 3


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path)])  # neither shards nor --sequences


@pytest.mark.slow
@pytest.mark.ray
def test_pretrain_on_ray_with_two_ddp_workers(tmp_path: Path) -> None:
    shards = write_dna_shards(
        tmp_path, [s for s, _, _ in make_barcodes(genera=2, species=2, per_species=8)]
    )  # 32 barcodes
    run = tmp_path / "run"
    args = [str(shards), "--output", str(run), "--workers", "2", "--epochs", "4", "--grad-accum", "2", *TINY_ARGS]
    assert main(args) == 0
    assert _steps(run) == [2, 4]  # 32 / (2 workers x 8 x 2 micro-batches) = 1 step per epoch
    assert (run / "model" / "config.json").exists()
