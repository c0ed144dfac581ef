"""Smoke tests of `bioscan-stream pretrain-dna` (jobs/pretrain_barcodebert.py), in-process and on Ray."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers_dna import make_barcodes, write_dna_shards
from helpers_ray import RayHead

import zoo
from jobs.pretrain_barcodebert import main
from zoo._factory import parse_overrides
from zoo.probes import embed_sequences, knn_probe, read_split

REPO = Path(__file__).resolve().parents[2]

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


SYNTH_MODEL = ["--model", "4-2-2", "--set", "hidden_size=64", "--set", "intermediate_size=128", "--set", "max_len=300"]


def _genus_probe(model: torch.nn.Module, shards: Path) -> dict[str, float]:
    """1-NN genus probe: keys `train`, queries `test_unseen`, cosine, genus codes of the set's global vocabulary."""
    keys, queries = read_split(str(shards), "train"), read_split(str(shards), "test_unseen")
    key_emb, query_emb = embed_sequences(model, keys.sequences), embed_sequences(model, queries.sequences)
    return knn_probe(key_emb, keys.labels["genus"], query_emb, queries.labels["genus"])


def _pretrain_on_synth(shards: Path, run: Path, steps: int, model: list[str]) -> list[float]:
    """`jobs.pretrain_barcodebert` in-process on the DNA-only set (read through the stream); the logged losses."""
    args = [str(shards / "dna"), "--output", str(run), "--workers", "0", *model, "--batch-size", "32"]
    args += ["--max-steps", str(steps), "--lr-per-64", "2e-3", "--log-every", "25", "--checkpoint-every", "1000"]
    assert main(args) == 0
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    print(f"MLM loss on the synthetic DNA shards: {losses[0]:.3f} -> {losses[-1]:.3f} (uniform {math.log(256):.3f})")
    return losses


def test_mlm_loss_falls_on_the_synthetic_release(synth_shards: Path, tmp_path: Path) -> None:
    """Release -> `jobs.convert` -> DNA-only shards -> 150 steps of a tiny 4-2-2: the loss falls well below ln(4^k)."""
    losses = _pretrain_on_synth(synth_shards, tmp_path / "run", 150, TINY_ARGS[:8])
    assert losses[-1] < 0.7 * math.log(4**4)


#: Pretraining steps of the probe comparison (batch 32: ~19k of the 100k release's ~43k unique barcodes).
PROBE_STEPS = 600


@pytest.fixture(scope="module")
def probes_100k(synth_shards_100k: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Pretrain on the 100k release's DNA-only set, then the genus probe of the model and of two random inits."""
    run = tmp_path_factory.mktemp("pretrain100k") / "run"
    losses = _pretrain_on_synth(synth_shards_100k, run, PROBE_STEPS, SYNTH_MODEL)
    overrides = parse_overrides(SYNTH_MODEL[3::2])
    random_init = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        random_init.append(_genus_probe(zoo.create_model("4-2-2", **overrides), synth_shards_100k / "cropped_256"))
    trained = _genus_probe(zoo.create_model("4-2-2", pretrained=run / "model"), synth_shards_100k / "cropped_256")
    print(f"1-NN genus of synthetic test_unseen (100k release): random init {random_init}, pretrained {trained}")
    return {"losses": losses, "random_init": random_init, "pretrained": trained}


@pytest.mark.slow
def test_pretraining_and_probes_on_the_100k_synthetic_release(probes_100k: dict[str, Any]) -> None:
    """The MLM loss falls well below ln 256 and both probes score far above chance on ~28 unseen species."""
    assert probes_100k["losses"][-1] < 0.5 * math.log(4**4)
    trained, random_init = probes_100k["pretrained"], probes_100k["random_init"]
    assert trained["n_queries"] == random_init[0]["n_queries"] > 250  # ~330 queries of ~28 species (20k: 5)
    for result in (trained, *random_init):
        assert 0.05 < result["micro_acc"] < 1.0 and math.isfinite(result["balanced_acc"])  # chance < 0.3%


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="acceptance item not met: on realistic synthetic reads a 600-step 4-2-2 MLM does not beat random "
    "init on the genus of unseen species (docs/models.md, BarcodeBERT section)",
)
def test_pretraining_beats_random_init_on_synthetic_unseen_species(probes_100k: dict[str, Any]) -> None:
    """The acceptance item: the pretrained model beats the better of two random inits by 5 points (micro and
    class-balanced), on ~28 unseen species, so a win is not one species more or less."""
    trained, best_random = probes_100k["pretrained"], probes_100k["random_init"]
    for key in ("micro_acc", "balanced_acc"):
        assert trained[key] > max(result[key] for result in best_random) + 0.05, key


@pytest.mark.ray
def test_ray_job_submit_pretrains_on_the_cluster(ray_head: RayHead, tmp_path: Path) -> None:
    """`ray job submit --working-dir <repo> -- python -m jobs.pretrain_barcodebert ...` on a real head node."""
    shards = write_dna_shards(tmp_path, [s for s, _, _ in make_barcodes(genera=2, species=2, per_species=4)])
    run = tmp_path / "run"
    command = ["python", "-m", "jobs.pretrain_barcodebert", str(shards), "--output", str(run), "--workers", "1"]
    done = ray_head.submit([*command, "--epochs", "2", *TINY_ARGS], working_dir=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout
    assert _steps(run) == [2, 4]  # 16 sequences / batch 8 = 2 steps per epoch, on one Ray Train worker
    assert (run / "checkpoint.pt").exists() and (run / "model" / "model.safetensors").exists()
