"""`bioscan-stream pipeline` on a cluster: each stage through `ray job submit` against the local Ray head, with
shards, crops, stores, indices, evaluations and stage records on the local S3-compatible server (moto)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers_pipeline import STEPS, step_lines, write_tiny_config
from helpers_ray import RayHead

from bioscan_stream.storage import list_urls, read_bytes

REPO = Path(__file__).resolve().parents[2]
#: One job per stage, in pipeline order (`embed` runs its two stores, `index` its one).
STAGES = ["synth", "shards", "crop", "pretrain", "embed", "index", "retrieval", "clustering", "report"]


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.ray
def test_each_stage_through_ray_job_submit_with_s3_paths(s3_bucket: str, ray_head: RayHead, tmp_path: Path) -> None:
    root = tmp_path / "tiny"
    config = write_tiny_config(root, remote=s3_bucket)
    aws = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    for stage in STAGES:
        command = ["python", "-m", "jobs.pipeline", str(config), "--stages", stage]
        result = ray_head.submit(command, working_dir=REPO, env_vars=aws, timeout=600)
        assert result.returncode == 0, f"{stage}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
        assert "Traceback" not in result.stdout, result.stdout[-3000:]
    assert list_urls(f"{s3_bucket}/shards/original_256", suffix=".tar")
    assert list_urls(f"{s3_bucket}/crops/cropped_256", suffix=".tar")
    for store in ("dna", "kmer"):
        assert json.loads(read_bytes(f"{s3_bucket}/stores/{store}/index.json"))["totals"]["rows"] > 0
    records = {step: json.loads(read_bytes(f"{s3_bucket}/state/{step}.json")) for step in STEPS}
    assert records["crop"]["items"] > 0 and records["report"]["items"] == 5
    retrieval = json.loads(read_bytes(f"{s3_bucket}/eval/retrieval.json"))
    assert retrieval["pairs"]["kmer->kmer"]["grid"]["seen"]["micro"]["genus"]["1"] > 0.5
    assert "**Top-1**" in (root / "report" / "index.md").read_text()
    # the whole pipeline as one job: every stage is found complete in object storage
    whole = ray_head.submit(["python", "-m", "jobs.pipeline", str(config)], working_dir=REPO, env_vars=aws)
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-3000:]
    lines = step_lines(whole.stdout)
    assert len(lines) == len(STEPS) and all("skipped: complete" in line for line in lines), whole.stdout[-3000:]
