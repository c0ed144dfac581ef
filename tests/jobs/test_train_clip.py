"""`bioscan-stream train-clip` (jobs/train_clip.py) on a synthetic release: outputs, resume after kill -9, Ray,
and the acceptance: a tiny CLIP beats its random-init self on image->DNA genus retrieval of unseen species.

Module fixtures: synthetic releases with photos of their train / key_unseen / test / test_unseen records, as
shards: 5k records (281 train; ~45 s to render and convert) for the job's plumbing, 20k (876 / 139 / 203 / 60;
~55 s) for the slow acceptance run. Models are `clip_tiny` without dropout and with 64 text tokens, one torch
thread per process (the 2-core box is shared).
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
import torch
from helpers_ray import RayHead
from safetensors.torch import load_file

from jobs.cli import main as cli_main
from jobs.train_clip import main
from zoo.tasks.clip_loop import make_clip_shards

REPO = Path(__file__).resolve().parents[2]
TINY = ["--model", "clip_tiny", "--loader-workers", "0", "--batch-size", "64"]
TINY += ["--set", 'dna_overrides={"hidden_size": 64, "intermediate_size": 128, "dropout": 0.0}']
TINY += ["--set", 'text_overrides={"dropout": 0.0, "char_max_len": 64}']
#: The acceptance settings (docs/clip.md): every weight trains, the corrected recipe.
LEARN = [*TINY, "--recipe", "corrected", "--finetune", "full", "--epochs", "1000", "--log-every", "20"]


def _rows(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def clip_shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_clip_shards(tmp_path_factory.mktemp("clip-synth5k"), samples=5_000)


@pytest.fixture(scope="module")
def clip_shards_20k(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_clip_shards(tmp_path_factory.mktemp("clip-synth20k"), samples=20_000)


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # NOTE: 2 threads on the loaded 2-core box were 6x slower per step (2026-12)
    yield
    torch.set_num_threads(threads)


def test_one_epoch_writes_metrics_plot_and_model(clip_shards: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main([clip_shards, "--output", str(run), "--workers", "0", *TINY, "--epochs", "1", "--log-every", "2"]) == 0
    rows = _rows(run)
    assert [r["step"] for r in rows] == [2, 4, 5]  # 281 / 64: 5 steps, the last one partial
    assert rows[-1]["epoch_samples"] == 281  # every train record exactly once
    pairs = {k for k in rows[0] if k.startswith("acc_")}
    assert pairs == {f"acc_{a}_{b}" for a in ("image", "dna", "text") for b in ("image", "dna", "text") if a != b}
    assert all(abs(r["temperature"] - 0.07) < 1e-6 for r in rows)  # the paper's fixed temperature
    assert (run / "loss_curve.png").stat().st_size > 10_000
    assert json.loads((run / "model" / "config.json").read_text())["recipe"] == "bioscan5m-paper"
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1


def test_grad_accumulation_and_two_modalities(clip_shards: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [clip_shards, "--output", str(run), "--workers", "0", *TINY, "--batch-size", "32", "--grad-accum", "2"]
    assert main([*args, "--modalities", "image", "dna", "--max-steps", "3", "--log-every", "3"]) == 0
    (row,) = _rows(run)
    assert row["step"] == 3 and row["epoch_samples"] == 3 * 64
    assert {k for k in row if k.startswith("acc_")} == {"acc_image_dna", "acc_dna_image"}
    assert json.loads((run / "model" / "config.json").read_text())["modalities"] == ["image", "dna"]


def _run_until_killed(args: list[str], run: Path, at_step: int) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "jobs.train_clip", *args], cwd=REPO, env=env,
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and child.poll() is None:
            if (run / "checkpoint.pt").exists():
                if torch.load(run / "checkpoint.pt", weights_only=True)["step"] >= at_step:
                    break
            time.sleep(0.2)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    return int(torch.load(run / "checkpoint.pt", weights_only=True)["step"])


def test_resume_after_kill_ends_with_the_weights_of_an_uninterrupted_run(clip_shards: str, tmp_path: Path) -> None:
    common = ["--workers", "0", *TINY, "--batch-size", "16", "--epochs", "1", "--checkpoint-every", "3"]
    common += ["--log-every", "3"]  # 281 / 16: 18 steps
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main([clip_shards, "--output", str(whole), *common]) == 0
    stopped = _run_until_killed([clip_shards, "--output", str(killed), *common], killed, at_step=6)
    assert 6 <= stopped < 18, "the run should be killed mid-epoch"
    before = [r for r in _rows(killed) if r["step"] <= stopped]
    assert main([clip_shards, "--output", str(killed), *common]) == 0
    rows = _rows(killed)
    assert rows[: len(before)] == before  # lines up to the checkpoint were kept, not recomputed
    assert [r["step"] for r in rows] == [r["step"] for r in _rows(whole)] and rows[-1]["epoch_samples"] == 281
    expected = load_file(whole / "model" / "model.safetensors")
    resumed = load_file(killed / "model" / "model.safetensors")
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)


def test_a_checkpoint_of_another_recipe_is_refused(clip_shards: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [clip_shards, "--output", str(run), "--workers", "0", *TINY, "--max-steps", "1", "--log-every", "1"]
    assert main(args) == 0
    with pytest.raises(ValueError, match="recipe 'bioscan5m-paper', not clip_tiny with 'corrected'"):
        main([*args, "--recipe", "corrected"])


def test_synthetic_smoke_run(tmp_path: Path) -> None:
    """`--synthetic --num-samples N`: makes its own small release with photos, then trains."""
    run = tmp_path / "run"
    assert main(["--synthetic", "--num-samples", "2000", "--output", str(run), "--workers", "0", *TINY,
                 "--max-steps", "1", "--log-every", "1"]) == 0  # fmt: skip
    assert (run / "synthetic" / "shards" / "cropped_256" / "index.json").exists()
    assert _rows(run)[0]["step"] == 1 and (run / "model" / "model.safetensors").exists()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path)])  # neither shards nor --synthetic
    with pytest.raises(SystemExit):
        main(["shards", "--output", str(tmp_path), "--recipe", "clip-2021"])


@pytest.mark.ray
def test_ray_job_submit_trains_on_the_cluster(clip_shards: str, ray_head: RayHead, tmp_path: Path) -> None:
    """`ray job submit --working-dir <repo> -- python -m jobs.train_clip ...` on a real head node."""
    run = tmp_path / "run"
    command = ["python", "-m", "jobs.train_clip", clip_shards, "--output", str(run), "--workers", "1"]
    command += [*TINY, "--max-steps", "4", "--log-every", "2"]
    done = ray_head.submit(command, working_dir=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout
    assert [r["step"] for r in _rows(run)] == [2, 4]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 4
    assert (run / "model" / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.ray
def test_two_ddp_workers_with_gathered_negatives(clip_shards: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [clip_shards, "--output", str(run), "--workers", "2", *TINY, "--recipe", "corrected", "--epochs", "1"]
    assert main([*args, "--log-every", "2"]) == 0
    rows = _rows(run)
    assert rows[-1]["epoch_samples"] == 281 and rows[-1]["step"] == 3  # 140-141 per rank / 64: 3 steps in lockstep
    assert rows[-1]["temperature"] != 0.07  # learnable in the corrected recipe


def _image_to_dna_genus(shards: str, model_dir: Path, out: Path) -> dict[str, float]:
    """`embed --model clip:RUN/image` and `/dna`, then `evaluate retrieval`: unseen micro top-1 genus per pair."""
    for modality in ("image", "dna"):
        args = ["embed", shards, "--model", f"clip:{model_dir}/{modality}", "--out", str(out / modality)]
        assert cli_main([*args, "--splits", "train", "key_unseen", "test", "test_unseen", "--no-progress"]) == 0
    stores = ["--store", f"image={out / 'image'}", "--store", f"dna={out / 'dna'}"]
    pairs = ["--pair", "image:dna", "--pair", "dna:dna", "--pair", "image:image"]
    assert cli_main(["evaluate", "retrieval", *stores, *pairs, "--out", str(out / "report")]) == 0
    results = json.loads((out / "report" / "retrieval.json").read_text())
    return {pair: entry["grid"]["unseen"]["micro"]["genus"]["1"] for pair, entry in results["pairs"].items()}


def _random_init_self(args: list[str], out: Path) -> Path:
    """The model the run starts from (same seed and overrides), saved as a folder the zoo loads."""
    from jobs import train_clip
    from zoo.tasks.clip_loop import build_model

    build_model(train_clip._config(train_clip.parse_args(args), args[0]), torch.device("cpu")).save_pretrained(out)
    return out


@pytest.mark.slow
def test_tiny_clip_beats_its_random_init_self_on_image_to_dna_genus_of_unseen_species(
    clip_shards_20k: str, tmp_path: Path
) -> None:
    """The acceptance run (~6 min here): 150 steps of batch 64 on 876 train records, then embed + evaluate."""
    clip_shards = clip_shards_20k
    args = [clip_shards, "--output", str(tmp_path / "run"), "--workers", "0", *LEARN, "--max-steps", "150"]
    assert main(args) == 0
    trained = _image_to_dna_genus(clip_shards, tmp_path / "run", tmp_path / "trained")
    initial = _image_to_dna_genus(clip_shards, _random_init_self(args, tmp_path / "init"), tmp_path / "initial")
    kmer = tmp_path / "kmer"  # the classical baseline of the DNA->DNA row: k-mer frequency vectors
    splits = ["--splits", "train", "key_unseen", "test", "test_unseen", "--no-progress"]
    assert cli_main(["embed", clip_shards, "--model", "kmer_freq_k5", "--out", str(kmer / "dna"), *splits]) == 0
    assert cli_main(["evaluate", "retrieval", "--store", f"dna={kmer / 'dna'}", "--out", str(kmer / "report")]) == 0
    report = json.loads((kmer / "report" / "retrieval.json").read_text())
    baseline = report["pairs"]["dna->dna"]["grid"]["unseen"]["micro"]["genus"]["1"]
    print(f"unseen genus top-1, trained {trained}, random init {initial}, k-mer DNA->DNA {baseline}")
    assert trained["image->dna"] > initial["image->dna"] + 0.1
    assert trained["image->image"] > initial["image->image"]
