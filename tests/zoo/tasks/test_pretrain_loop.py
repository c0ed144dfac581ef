"""Tests of zoo.tasks.pretrain_loop: the loss falls, checkpoints resume exactly, the outputs are written."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from helpers_dna import TINY, TINY_NAME, make_barcodes

from zoo.tasks.dna_sources import ListSource
from zoo.tasks.pretrain_loop import PretrainConfig, train_worker


def _config(tmp_path: Path, **changes: object) -> PretrainConfig:
    base = PretrainConfig(
        output_dir=str(tmp_path / "run"),
        model=TINY_NAME,
        model_overrides=tuple(TINY.items()),
        batch_size=16,
        epochs=400,
        lr_per_64=3e-2,
        log_every=10,
        checkpoint_every=10,
    )
    return replace(base, **changes)


def _metrics(cfg: PretrainConfig) -> list[dict]:
    return [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_well_below_uniform(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    seqs = [s for s, _, _ in make_barcodes(genera=4, species=2, per_species=8)]
    cfg = _config(tmp_path, max_steps=300)
    summary = train_worker(cfg, ListSource(seqs))
    rows = _metrics(cfg)
    assert summary["step"] == 300 and rows[-1]["step"] == 300
    assert rows[0]["loss"] > 0.9 * math.log(256)
    assert rows[-1]["loss"] < 0.5 * math.log(256)  # uniform baseline ln(4^k) = 5.55
    assert rows[-1]["masked_acc"] > rows[0]["masked_acc"]
    assert all(r["samples_per_s"] > 0 and r["tokens_per_s"] > 0 for r in rows)
    out = Path(cfg.output_dir)
    assert (out / "loss_curve.png").stat().st_size > 0 and (out / "model" / "config.json").exists()


@dataclass(frozen=True)
class _KilledSource:
    """A source whose stream dies after `limit` sequences in epoch `epoch` (a worker killed mid-run)."""

    inner: ListSource
    epoch: int
    limit: int

    def num_sequences(self) -> int:
        return self.inner.num_sequences()

    def iter_worker(self, *, epoch: int, rank: int, world_size: int) -> Iterator[str]:
        for i, seq in enumerate(self.inner.iter_worker(epoch=epoch, rank=rank, world_size=world_size)):
            if epoch == self.epoch and i == self.limit:
                raise KeyboardInterrupt("killed")
            yield seq


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    source = ListSource([s for s, _, _ in make_barcodes(genera=2, species=2, per_species=8)])  # 32 seqs: 2 steps/epoch
    full = _config(tmp_path / "full", epochs=12, grad_accum=1, checkpoint_every=5)
    train_worker(full, source)
    resumed = replace(full, output_dir=str(tmp_path / "resumed"))
    with pytest.raises(KeyboardInterrupt):
        train_worker(resumed, _KilledSource(source, epoch=8, limit=20))  # dies in step 18; 16 and 17 are redone
    ckpt = torch.load(Path(resumed.output_dir) / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 15
    train_worker(resumed, source)
    a = torch.load(Path(full.output_dir) / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(Path(resumed.output_dir) / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert [r["step"] for r in _metrics(resumed)] == [r["step"] for r in _metrics(full)]
