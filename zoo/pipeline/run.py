"""Run a pipeline: each step in order, skipped when its outputs are complete and were made from its inputs.

A step's fingerprint is the sha256 of its parameters and of the bytes of its input manifests (the upstream
`index.json` files, the release's metadata CSV, the pretrained weights, and for the report the other stages'
records). After a step runs, `<state>/<step>.json` records that fingerprint, the sha256 of each output manifest,
and what the run measured (wall seconds, items, items/s, peak memory of the process tree). A later run skips a
step whose record has the same fingerprint and whose output manifests still hash as recorded; every job
writes its manifest last and atomically, so a killed pipeline resumes at the first unfinished step, and the
jobs themselves keep the shards / store files / checkpoints they had finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

from bioscan_stream.ray_runtime import ray_runtime
from bioscan_stream.storage import join_url, open_url, read_bytes, url_exists
from zoo.pipeline.config import PipelineConfig
from zoo.pipeline.monitor import PeakMemory
from zoo.pipeline.stages import RunSettings, Step, build_steps

__all__ = ["PipelineError", "read_record", "record_url", "run_pipeline", "select_steps"]

#: Bumped when the record layout or the fingerprint recipe changes (old records then no longer match).
RECORD_VERSION = 1


class PipelineError(RuntimeError):
    """A step cannot start (an input is missing, an unknown stage was asked for); one line saying what to do."""


def record_url(state: str, step: str) -> str:
    return join_url(state, f"{step}.json")


def read_record(state: str, step: str) -> dict[str, Any] | None:
    """The record of `step`'s last finished run, or None."""
    url = record_url(state, step)
    return json.loads(read_bytes(url)) if url_exists(url) else None


def _sha256(url: str) -> str:
    return hashlib.sha256(read_bytes(url)).hexdigest()


def _fingerprint(step: Step) -> tuple[str, dict[str, str]]:
    missing = [url for url in step.inputs if not url_exists(url)]
    if missing:
        raise PipelineError(f"stage {step.name}: input {missing[0]} is missing; run the stage that writes it first")
    inputs = {url: _sha256(url) for url in step.inputs}
    params = json.dumps({"version": RECORD_VERSION, "stage": step.name, "params": dataclasses.asdict(step.params),
                         "inputs": inputs}, sort_keys=True)  # fmt: skip
    return hashlib.sha256(params.encode()).hexdigest(), inputs


def _is_complete(record: dict[str, Any] | None, fingerprint: str) -> bool:
    if record is None or record.get("fingerprint") != fingerprint:
        return False
    return all(url_exists(url) and _sha256(url) == digest for url, digest in record["outputs"].items())


def select_steps(steps: list[Step], names: Sequence[str] | None) -> list[Step]:
    """The steps named (a stage name such as `embed` selects all its `embed.<name>` steps), in pipeline order."""
    if not names:
        return steps
    known = {step.name for step in steps} | {step.name.split(".")[0] for step in steps}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise PipelineError(f"unknown stage {unknown[0]!r}; this config has: {', '.join(s.name for s in steps)}")
    return [s for s in steps if s.name in names or s.name.split(".")[0] in names]


def _run_step(step: Step, fingerprint: str, inputs: dict[str, str], ray_start: float) -> dict[str, Any]:
    with PeakMemory() as memory:
        start = time.perf_counter()
        try:
            items, unit = step.run()
        except (FileNotFoundError, KeyError, TypeError, ValueError) as error:  # bad input to a job
            raise PipelineError(f"stage {step.name}: {error}") from error
        seconds = time.perf_counter() - start
    return {
        "version": RECORD_VERSION,
        "stage": step.name,
        "fingerprint": fingerprint,
        "params": dataclasses.asdict(step.params),
        "inputs": inputs,
        "outputs": {url: _sha256(url) for url in step.outputs},
        "items": items,
        "unit": unit,
        "seconds": round(seconds, 3),
        "items_per_s": round(items / seconds, 2) if seconds > 0 else None,
        "peak_memory_bytes": memory.peak,
        "ray_start_seconds": round(ray_start, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_pipeline(
    config: PipelineConfig,
    settings: RunSettings,
    *,
    stages: Sequence[str] | None = None,
    on_step: Callable[[str, dict[str, Any], bool], None] | None = None,
) -> list[dict[str, Any]]:
    """Run (or skip) the steps of `config` (all, or those of `stages`); returns their records in order.

    `on_step(name, record, skipped)` is called after each step. The Ray runtime (the cluster of
    `settings.ray_address`, else an embedded local one of `settings.num_cpus`) starts at the first step that
    needs Ray and stays up for the rest, so the steps share one start.
    """
    steps = select_steps(build_steps(config, settings), stages)
    records: list[dict[str, Any]] = []
    with ExitStack() as ray_scope:
        ray_up = False
        for step in steps:
            fingerprint, inputs = _fingerprint(step)
            record = read_record(config.state, step.name)
            skipped = _is_complete(record, fingerprint)
            if not skipped:
                ray_start = time.perf_counter()
                if step.uses_ray and not ray_up:
                    ray_scope.enter_context(ray_runtime(settings.ray_address, num_cpus=settings.num_cpus))
                    ray_up = True
                record = _run_step(step, fingerprint, inputs, time.perf_counter() - ray_start)
                with open_url(record_url(config.state, step.name), "wb") as f:
                    f.write(json.dumps(record, indent=1).encode() + b"\n")
            assert record is not None
            records.append(record)
            if on_step is not None:
                on_step(step.name, record, skipped)
    return records
