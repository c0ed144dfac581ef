"""Is the crop job's batched DETR faster than the crop tool's one-image loop, and does the job scale to 2 workers?

1. DETR-R50 with random weights (seed 0: speed does not depend on them) on N synthetic 1024x768 originals:
   - baseline (same run, same weights, same JPEGs): the tool's loop, one image at a time: PIL decode ->
     `DetrImageProcessor` -> `model(pixel_values, pixel_mask=None)` (fp32, torch's threads = all cores) ->
     the highest-probability query -> bioscan5m crop -> JPEG;
   - the job: `crop_shards(detector="detr")` with 2 detector actors of 1 thread each (the model as the job runs
     it on CPU: batch norms folded, 1x1 convolutions through oneDNN, `zoo.detectors.cpu_fusion`), batches of 2, decode
     and crop in Ray tasks, on a Ray runtime started beforehand (its start is not counted; the driver's detector
     build for the fingerprint, the actors' model builds and the publishing are);
   - the bound: torch profiles of the model's own forward (batch 2, channels-last, no I/O), with all cores in
     one forward and with one thread (one forward per core, as the job's actors run); the faster gives the
     floor per image, and `bound = tool seconds / (N x floor)` is the speedup a pipeline that hides everything
     but the forward could reach; the job's speedup is reported as a fraction of it (target: >= 1.5x, or >= 0.9
     of the bound when the bound is lower). The boxes of the job and of the loop are compared too.
2. Scaling: the job with the classical detector on M originals, as a process pinned (`taskset`) to 1 core with
   1 detector actor vs 2 cores with 2 actors; the ratio of the job's pipeline seconds (Ray's start excluded).

Both parts run `--rounds` rounds (default 3) of baseline then measured run, so that a load change hits both;
each headline ratio is the median and spread of the rounds' ratios (`_results.spread`).

The box is shared with other sessions: `os.getloadavg()` is recorded before and after each measurement, and
CPU seconds (this process and its descendants, Ray's workers polled every 0.25 s) beside wall seconds for part 1:
CPU time does not count the neighbours, wall time does.
Appends one JSON line to benchmarks/results/crop.jsonl. `--quick`: N=4, M=16.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from _results import TreeCpu, append_result, load_1min, machine_info, process_cpu, spread, spread_text
from PIL import Image
from torch.profiler import ProfilerActivity, profile

from bioscan_stream.crop import crop_with_preset
from bioscan_stream.metadata import read_bbox
from bioscan_stream.schema import IMAGE
from bioscan_stream.shards.convert import ConvertConfig, convert_release
from bioscan_stream.synth.release import write_release
from zoo.cropping import CropConfig, crop_shards
from zoo.detectors.detr import DetrDetector, load_detr, select_boxes
from zoo.embedding.sources import list_input_shards, read_shard_samples
from zoo.encoder import state_sha256

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_worker_niceness", "0")  # see bench_index.py: niced workers measure the neighbours


def _originals(root: Path, samples: int, seed: int) -> Path:
    """OUT/original_full shards of a synthetic release of `samples` records."""
    write_release(root / "release", samples=samples, seed=seed, packages=("original_full",), workers=1)
    config = ConvertConfig(str(root / "release"), str(root / "shards"), package="original_full", dna=False)
    convert_release(config)
    return root / "shards" / "original_full"


def _jpegs(shards: Path) -> list[tuple[str, bytes]]:
    splits = tuple(json.loads((shards / "index.json").read_text())["splits"])
    found, _ = list_input_shards(str(shards), splits)
    return [(s["__key__"], s[IMAGE]) for shard in found for s in read_shard_samples(shard, frozenset({IMAGE}))]


def tool_loop(model: Any, processor: Any, jpegs: list[tuple[str, bytes]]) -> dict[str, tuple[float, ...]]:
    """The crop tool's loop (scripts/crop_images.py): one image at a time, decode to crop, fp32, no mask."""
    boxes = {}
    for key, data in jpegs:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        encoding = processor(images=image, return_tensors="pt")
        with torch.inference_mode():
            out = model(pixel_values=encoding["pixel_values"], pixel_mask=None)
        (found,) = select_boxes(out.logits, out.pred_boxes, [image.size])
        box = tuple(float(np.round(v)) for v in found.box)  # type: ignore[union-attr]
        cropped, _ = crop_with_preset(image, box, "bioscan5m")
        cropped.save(io.BytesIO(), format="JPEG", quality=90)
        boxes[key] = box
    return boxes


def forward_profile(detector: DetrDetector, jpegs: list[tuple[str, bytes]], batch: int, threads: int) -> dict[str, Any]:
    """Seconds per image of the model's forward alone (batched, channels-last, `threads`) and its top operators."""
    torch.set_num_threads(threads)
    images = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for _, data in jpegs[:batch]]
    inputs = detector.inputs(images)
    detector.forward(inputs)  # warm-up (oneDNN primitives)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start, cpu = time.perf_counter(), process_cpu()
        detector.forward(inputs)
        seconds, cpu = time.perf_counter() - start, process_cpu() - cpu
    table = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    top = {e.key: round(e.self_cpu_time_total / 1e6, 3) for e in table}
    per_image = {"seconds_per_image": seconds / batch, "cpu_s_per_image": cpu / batch}
    return {**per_image, "batch": batch, "threads": torch.get_num_threads(), "top_ops_s": top}


def _detr_round(
    tool_model: Any, detector: DetrDetector, jpegs: list[tuple[str, bytes]], shards: Path, out: Path
) -> dict[str, Any]:
    """One round: the tool's loop, then the job (on the running Ray runtime), each timed in wall and CPU seconds."""
    torch.set_num_threads(os.cpu_count() or 1)
    loads = [load_1min()]
    start, cpu = time.perf_counter(), process_cpu()
    tool_boxes = tool_loop(tool_model, detector.processor, jpegs)
    tool_s, tool_cpu = time.perf_counter() - start, process_cpu() - cpu
    loads.append(load_1min())
    tree = TreeCpu()
    tree.sample()
    started = tree.seconds() + process_cpu()  # the runtime's processes before the job
    tree.start()
    config = CropConfig(
        str(shards), str(out), detector="detr", packages=("cropped_256",), batch_size=2, concurrency=2, progress=False
    )
    start = time.perf_counter()
    report = crop_shards(config)
    job_s = time.perf_counter() - start
    tree.done.set()
    tree.join()
    tree.sample()
    job_cpu = tree.seconds() + process_cpu() - started  # driver + every Ray process of the runtime
    loads.append(load_1min())
    job_boxes = {r["processid"]: (r["x0"], r["y0"], r["x1"], r["y1"]) for r in read_bbox(out).to_pylist()}
    diff = max(float(np.abs(np.subtract(job_boxes[k], b)).max()) for k, b in tool_boxes.items())
    return {
        "tool_loop_s": round(tool_s, 2), "job_s": round(job_s, 2), "tool_cpu_s": round(tool_cpu, 2),
        "job_cpu_s": round(job_cpu, 2), "job_phases_s": {k: round(v, 2) for k, v in report.seconds.items()},
        "max_box_diff_px": diff, "load_1min": loads,
    }  # fmt: skip


def bench_detr(work: Path, n: int, rounds: int) -> dict[str, Any]:
    shards = _originals(work / "detr", n, seed=5)
    jpegs = _jpegs(shards)
    tool_model = load_detr(None, seed=0)  # plain NCHW, as the tool builds it
    detector = DetrDetector(seed=0, batch_size=2)
    same_weights = state_sha256(tool_model) == detector.fingerprint()["weights_sha256"]  # before CPU fusion
    # 2 actors + 2 slots for decode/crop tasks; started once, idle during the tool's turns (its start not counted)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        turns = [_detr_round(tool_model, detector, jpegs, shards, work / f"detr_out{i}") for i in range(rounds)]
    finally:
        ray.shutdown()
    del tool_model
    cores = os.cpu_count() or 1
    profiled = forward_profile(detector, jpegs, batch=2, threads=cores)
    single = forward_profile(detector, jpegs, batch=2, threads=1)
    # The model's own best throughput: all cores in one forward, or one forward per core (what the job's
    # single-thread actors do; under load it avoids OpenMP barriers waiting on descheduled threads).
    floor = min(profiled["seconds_per_image"], single["seconds_per_image"] / cores)
    loads = [t["load_1min"][::2] for t in turns]
    speedup = spread([round(t["tool_loop_s"] / t["job_s"], 3) for t in turns], loads=loads)
    bound = float(np.median([t["tool_loop_s"] for t in turns])) / (n * floor)
    return {
        "images": n, "same_weights": same_weights, "rounds": turns, "speedup": speedup,
        "forward": profiled, "forward_1_thread": single, "bound": round(bound, 3),
        "fraction_of_bound": round(speedup["median"] / bound, 3),
        "max_box_diff_px": max(t["max_box_diff_px"] for t in turns),
        "cpu_s_per_image": {"tool_loop": round(float(np.median([t["tool_cpu_s"] for t in turns])) / n, 2),
                            "job": round(float(np.median([t["job_cpu_s"] for t in turns])) / n, 2)},
    }  # fmt: skip


def _job_process(shards: Path, out: Path, cores: str, workers: int) -> dict[str, Any]:
    """The classical crop job as a process pinned to `cores` (its Ray workers inherit the pinning)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    command = ["taskset", "-c", cores, sys.executable, "-m", "jobs.crop", str(shards), "--out", str(out)]
    command += ["--concurrency", str(workers), "--num-cpus", str(2 * workers), "--no-progress"]
    done = subprocess.run(command, env=env, cwd=REPO, check=True, capture_output=True, text=True, timeout=1200)
    return dict(json.loads(done.stdout[done.stdout.index("{") :]))


def bench_scaling(work: Path, m: int, rounds: int) -> dict[str, Any]:
    shards = _originals(work / "scaling", m, seed=6)
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for turn in range(rounds):
        for cores, workers in (("0", 1), ("0,1", 2)):
            load = load_1min()
            report = _job_process(shards, work / f"scale{turn}-{workers}", cores, workers)
            seconds = report["seconds"]["pipeline"]
            runs[workers].append({"pipeline_s": round(seconds, 2), "images_per_s": round(m / seconds, 2),
                                  "load_1min": [load, load_1min()]})  # fmt: skip
    pairs = list(zip(runs[1], runs[2], strict=True))
    scaling = spread([round(one["pipeline_s"] / two["pipeline_s"], 3) for one, two in pairs],
                     loads=[[one["load_1min"][0], two["load_1min"][1]] for one, two in pairs])  # fmt: skip
    return {"images": m, "runs": runs, "scaling": scaling}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images",
        type=int,
        default=192,
        help="DETR images (N; the job's fixed cost, ~10 s of actor imports and model builds, is then ~8%%)",
    )
    parser.add_argument("--scaling-images", type=int, default=1500, help="classical job images (M)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of baseline and job, in turns (%(default)s)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    n, m = (4, 16) if args.quick else (args.images, args.scaling_images)
    work = Path(tempfile.mkdtemp(prefix="bench-crop-"))
    try:
        machine = machine_info()
        detr = bench_detr(work, n, args.rounds)
        print(json.dumps(detr, indent=1), flush=True)
        scaling = bench_scaling(work, m, args.rounds)
        print(json.dumps(scaling, indent=1), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record = {"quick": args.quick, "detr_r50": detr, "scaling_classical": scaling, "machine": machine}
    print(
        f"DETR-R50 job vs tool loop: {spread_text(detr['speedup'])} (bound {detr['bound']:.2f}x, "
        f"{detr['fraction_of_bound']:.2f} of it); classical job 1 -> 2 workers: {spread_text(scaling['scaling'])}"
    )
    print(f"appended to {append_result('crop', record)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
