"""`bioscan-stream train-classifier` (jobs/train_classifier.py) on a synthetic release: learning, reload, resume, Ray.

Module fixtures: a 20k-record synthetic release whose train/test records get real rendered photos (876
train, 203 test; ~10 s to render), converted to shards; the order experiment on it (resnet10t, 64 px, 3
epochs on CPU). The other tests reuse the shard set with smaller settings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from helpers_ray import RayHead

from bioscan_stream.stream import BioscanStream
from jobs.train_classifier import main
from zoo.tasks.classify_data import make_synthetic_shards

REPO = Path(__file__).resolve().parents[2]

#: The measured recipe (docs/image-classification.md): resnet10t, 64 px, batch 32, 3 epochs, peak lr 2e-3.
LEARN_ARGS = ["--model", "resnet10t", "--image-size", "64", "--batch-size", "32", "--epochs", "3", "--lr", "2e-3"]
LEARN_ARGS += ["--crop-scale-min", "0.25", "--loader-workers", "1", "--log-every", "5", "--checkpoint-every", "20"]
#: Quick settings for the plumbing tests.
TINY_ARGS = ["--model", "resnet10t", "--image-size", "32", "--loader-workers", "0"]


def _rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def synth_images(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 20k-record synthetic release with rendered photos of its train/test records, as shards (~35 s)."""
    return make_synthetic_shards(tmp_path_factory.mktemp("synth-images"), samples=20_000)


@pytest.fixture(scope="module")
def order_run(synth_images: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The order experiment in-process: resnet10t trained on the train split, report on test."""
    run = tmp_path_factory.mktemp("order") / "run"
    started = time.perf_counter()
    assert main([synth_images, "--output", str(run), "--workers", "0", *LEARN_ARGS]) == 0
    report = json.loads((run / "report.json").read_text())
    majority, chance = report["majority"]["top1"], report["chance"]["macro"]
    print(
        f"order, resnet10t 64 px, {time.perf_counter() - started:.0f} s: top-1 {report['top1']:.3f} "
        f"(majority {majority:.3f}), macro {report['macro']:.3f} (chance {chance:.3f})"
    )
    return run


def test_order_classifier_beats_the_majority_baseline(order_run: Path) -> None:
    report = json.loads((order_run / "report.json").read_text())
    assert report["num_classes"] == 11 and report["test_samples"] == 203  # the 20k release's train orders / test
    assert report["top1"] > report["majority"]["top1"]
    assert report["macro"] >= 3 * report["chance"]["macro"]
    for name in ("report.md", "confusion_matrix.png", "loss_curve.png", "classes.json", "model.safetensors"):
        assert (order_run / name).stat().st_size > 0, name
    rows = _rows(order_run)
    assert rows[-1]["loss"] < rows[0]["loss"] and rows[-1]["epoch_samples"] == 876


@torch.no_grad()
def test_checkpoint_reloads_with_plain_timm_to_the_same_predictions(order_run: Path, synth_images: str) -> None:
    report = json.loads((order_run / "report.json").read_text())
    codes = [c["code"] for c in json.loads((order_run / "classes.json").read_text())["classes"]]
    ckpt = timm.create_model("resnet10t", num_classes=11, checkpoint_path=str(order_run / "checkpoint.pt")).eval()
    final = timm.create_model("resnet10t", num_classes=11, checkpoint_path=str(order_run / "model.safetensors")).eval()
    stream = BioscanStream(
        synth_images, split="test", modalities=("image",), targets=("order",), transform="eval",
        image_size=64, batch_size=64, tokenizer=None, rank=0, world_size=1,
    )  # fmt: skip
    correct = total = 0
    for batch in stream:
        logits = ckpt(batch["image"])
        assert torch.equal(logits, final(batch["image"]))
        truth = torch.tensor([codes.index(c) if c in codes else -1 for c in batch["order"].tolist()])
        correct += int((logits.argmax(1) == truth)[truth >= 0].sum())
        total += int((truth >= 0).sum())
    assert total == report["test_samples"] and correct == round(report["top1"] * total)


def test_resume_after_a_kill_continues_from_the_checkpoint(synth_images: str, tmp_path: Path) -> None:
    """SIGKILL mid-epoch, rerun the same command: it continues at the checkpoint, each record once in the epoch."""
    run = tmp_path / "run"
    args = [synth_images, "--output", str(run), "--workers", "0", *TINY_ARGS, "--batch-size", "32"]
    args += ["--epochs", "1", "--checkpoint-every", "4", "--log-every", "4"]  # 876 / 32: 28 steps
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-m", "jobs.train_classifier", *args], cwd=REPO, env=env,
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and child.poll() is None:
            if (run / "checkpoint.pt").exists() and torch.load(run / "checkpoint.pt", weights_only=True)["step"] >= 8:
                break
            time.sleep(0.2)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    killed_at = torch.load(run / "checkpoint.pt", weights_only=True)["step"]
    assert 8 <= killed_at < 28, "the run should be killed mid-epoch"
    before = [r for r in _rows(run) if r["step"] <= killed_at]
    assert main(args) == 0
    rows = _rows(run)
    assert [r["step"] for r in rows] == list(range(4, 29, 4))
    assert rows[: len(before)] == before  # the lines up to the checkpoint were not recomputed
    assert rows[-1]["epoch_samples"] == 876  # the killed and the resumed part: every record once
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1


def test_diptera_family_classes(synth_images: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [synth_images, "--output", str(run), "--workers", "0", "--task", "diptera_family", *TINY_ARGS]
    assert main([*args, "--max-steps", "2", "--log-every", "1"]) == 0
    classes = json.loads((run / "classes.json").read_text())
    assert classes["rank"] == "family" and classes["within"] == "Diptera" and len(classes["codes"]) == 40
    assert sum(classes["train_counts"]) + sum(classes["excluded"].values()) == 876
    assert classes["excluded"]["outside_parent"] == 876 - 578  # the 20k release's non-Diptera train records
    report = json.loads((run / "report.json").read_text())
    assert report["excluded_test"]["outside_parent"] == 203 - 143


def test_synthetic_smoke_run(tmp_path: Path) -> None:
    """`--synthetic --num-samples N`: makes its own small release with photos, then trains and reports."""
    run = tmp_path / "run"
    assert main(["--synthetic", "--num-samples", "3000", "--output", str(run), "--workers", "0", *TINY_ARGS,
                 "--max-steps", "2", "--batch-size", "16"]) == 0  # fmt: skip
    assert (run / "synthetic" / "shards" / "cropped_256" / "index.json").exists()
    assert json.loads((run / "report.json").read_text())["test_samples"] > 0


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path)])  # neither shards nor --synthetic


@pytest.mark.slow
@pytest.mark.ray
def test_two_ddp_workers_on_ray_train(synth_images: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [synth_images, "--output", str(run), "--workers", "2", *TINY_ARGS, "--batch-size", "32"]
    assert main([*args, "--epochs", "1", "--log-every", "2"]) == 0
    rows = _rows(run)
    assert rows[-1]["epoch_samples"] == 876 and rows[-1]["step"] == 14  # 438 per rank / 32: 14 steps in lockstep
    assert json.loads((run / "report.json").read_text())["test_samples"] == 203


@pytest.mark.ray
def test_ray_job_submit_trains_on_the_cluster(synth_images: str, ray_head: RayHead, tmp_path: Path) -> None:
    """`ray job submit --working-dir <repo> -- python -m jobs.train_classifier ...` on a real head node."""
    run = tmp_path / "run"
    command = ["python", "-m", "jobs.train_classifier", synth_images, "--output", str(run), "--workers", "1"]
    command += [*TINY_ARGS, "--batch-size", "32", "--max-steps", "4", "--log-every", "2"]
    done = ray_head.submit(command, working_dir=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout
    assert [r["step"] for r in _rows(run)] == [2, 4]
    assert json.loads((run / "report.json").read_text())["test_samples"] == 203
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 4
