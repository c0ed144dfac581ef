"""The crop job: originals (shards or a release) -> Ray Data (read | decode | detector pool) -> crop tasks -> shards.

Flow (`crop_shards`):

1. plan: the input's shards (`zoo.cropping.inputs`: an `original_full` or `original_256` shard set, or a release
   root read in the shards the converter would write of it), the detector built once in the driver (a missing or
   mismatched checkpoint fails here, before any work) and its fingerprint; shards whose journal record names the
   same input, detector and settings, with tars that still hash as recorded, are kept;
2. Ray Data over the other shards: one read task per shard (raw JPEG bytes, `zoo.embedding.sources`) ->
   `map_batches` CPU decoding (undecodable and uniform images marked as rejects) -> `map_batches` over an actor
   pool of detector replicas (built once per actor, `num_gpus` each when there are GPUs) -> the driver;
3. as soon as all rows of a shard are back, a Ray task crops it (`zoo.cropping.shard.crop_shard`: crop + resize
   + JPEG, one tar per package, journal record), overlapping with the detection of later shards;
4. `zoo.cropping.outputs`: per package `rejects.jsonl`, `vocab.json` and, last, `index.json`; the bbox TSV, the
   review list and the contact sheet.

Everything written is a function of the input bytes and the settings (row order, shard names, boxes), so a
rerun after `kill -9` gives byte-identical output (tested).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from PIL import Image
from tqdm.auto import tqdm

from bioscan_stream.crop import get_crop_preset
from bioscan_stream.ray_runtime import ray_runtime
from bioscan_stream.schema import IMAGE
from bioscan_stream.validate import NO_DETECTION, UNREADABLE_IMAGE
from zoo.cropping.inputs import payload_samples, read_inputs
from zoo.cropping.outputs import publish
from zoo.cropping.shard import CropSettings, RowDetection, ShardCrops, crop_shard, reuse_shard
from zoo.detectors import Detector, create_detector
from zoo.embedding.sources import InputShard, ShardPayloads

__all__ = ["CropConfig", "CropReport", "crop_shards", "detector_digest"]

log = logging.getLogger(__name__)

OUTPUT_PACKAGES = ("cropped", "cropped_256")
#: A decoded image whose pixels all lie within this many levels is no photo (blank, black, a test card).
_UNIFORM_LEVELS = 8
#: Memory reserved per decode task: a batch of 1024x768 RGB originals plus PIL/numpy copies (~0.3 GB).
_TASK_MEMORY = 1 << 29


@dataclass(frozen=True)
class CropConfig:
    """Everything the crop job needs (the CLI builds one from its flags).

    Args:
        shards: input shard set folder (`OUT/original_full` or `OUT/original_256`, local or `s3://`), or with
            `package` a local release root (extracted images and/or the official zips).
        package: the release's image package to crop, `original_full` or `original_256` (None: `shards` is a
            shard set). The release is read in the shards `bioscan-stream shards --package P` writes of it.
        out: output root (local or `s3://`): `OUT/<package>/` shard sets, `OUT/BIOSCAN_5M_Insect_bbox.tsv`,
            `OUT/review.tsv`, `OUT/contact_sheet.png`.
        detector: `classical` or `detr` (`zoo.detectors.list_detectors()`); `detector_options` its keyword
            settings, e.g. `(("checkpoint", "crop_tool.ckpt"),)`.
        preset: crop procedure, `bioscan5m` or `bioscan1m` (`bioscan_stream.crop.CROP_PRESETS`).
        packages: output packages, any of `cropped`, `cropped_256`.
        splits: splits to crop (None: all of the input's).
        batch_size: images per detector call; `concurrency` detector replicas (actors), `num_gpus` per replica
            (None: 1 when the cluster has GPUs), `cpus_per_actor` CPU threads each.
        review: how many of the lowest-confidence images `review.tsv` lists; `sheet` how many the contact sheet shows.
        task_env: (name, value) pairs set in every Ray task and actor (e.g. AWS endpoint variables for `s3://`).
    """

    shards: str
    out: str
    package: str | None = None
    detector: str = "classical"
    detector_options: tuple[tuple[str, Any], ...] = ()
    preset: str = "bioscan5m"
    packages: tuple[str, ...] = OUTPUT_PACKAGES
    splits: tuple[str, ...] | None = None
    batch_size: int = 8
    concurrency: int = 1
    num_gpus: float | None = None
    cpus_per_actor: int = 1
    review: int = 50
    sheet: int = 24
    ray_address: str | None = None
    num_cpus: int | None = None
    progress: bool = True
    task_env: tuple[tuple[str, str], ...] = ()

    @property
    def runtime_env(self) -> dict[str, Any] | None:
        return {"env_vars": dict(self.task_env)} if self.task_env else None


@dataclass
class CropReport:
    """What a run did: rows read / cropped / rejected, shards written vs kept, seconds per phase.

    Phases: `plan` (detector built for its fingerprint, finished shards checked), `pipeline` (detection and crop
    tasks, after the Ray runtime is up), `publish` (manifests, tables, contact sheet), `total` (all, with Ray's start).
    """

    out: str
    read: int = 0
    cropped: int = 0
    rejected: int = 0
    shards_written: int = 0
    shards_kept: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def detector_digest(detector: Detector) -> str:
    """sha256 of the canonical JSON of a detector's fingerprint: which detector, settings and weights."""
    return hashlib.sha256(json.dumps(detector.fingerprint(), sort_keys=True, default=str).encode()).hexdigest()


def uniform_problem(image: np.ndarray) -> str | None:
    """Why a decoded image cannot be a photo of a well (all pixels nearly one colour), or None."""
    sample = image[::4, ::4]
    spread = int(sample.max()) - int(sample.min()) if sample.size else 0
    return None if spread >= _UNIFORM_LEVELS else f"uniform image: every pixel within {spread + 1} levels"


def _decode(data: bytes) -> np.ndarray | str:
    """RGB uint8 pixels of a JPEG, or why there are none."""
    try:
        with Image.open(io.BytesIO(data)) as raw:
            return np.asarray(raw.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        return f"undecodable image: {error}"


_EMPTY = np.zeros((1, 1, 3), np.uint8)


def _decode_batch(batch: pa.Table) -> dict[str, np.ndarray]:
    """CPU stage: JPEG bytes -> pixels (a 1-pixel placeholder on rejected rows) + a reason column."""
    images, reasons, details = [], [], []
    for data in batch.column("payload").to_pylist():
        pixels = _decode(data)
        problem = pixels if isinstance(pixels, str) else uniform_problem(pixels)
        reasons.append("" if problem is None else UNREADABLE_IMAGE if isinstance(pixels, str) else NO_DETECTION)
        details.append(problem or "")
        images.append(_EMPTY if problem else pixels)
    column = np.empty(len(images), dtype=object)
    column[:] = images
    return {
        "shard": batch.column("shard").to_numpy(),
        "row": batch.column("row").to_numpy(),
        "reason": np.array(reasons, dtype=object),
        "detail": np.array(details, dtype=object),
        "image": column,
    }


class _DetectActor:
    """Detector replica: built once per actor, then one `detect` call per batch of decoded images."""

    def __init__(self, name: str, options: dict[str, Any], expected: str) -> None:
        self.detector = create_detector(name, **options)
        digest = detector_digest(self.detector)
        if digest != expected:
            raise RuntimeError(f"replica built a different {name} detector ({digest[:12]} != {expected[:12]})")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["row"])
        reasons, details = list(batch["reason"]), list(batch["detail"])
        boxes, scores = np.full((n, 4), np.nan), np.zeros(n)
        todo = [i for i in range(n) if not reasons[i]]
        found = self.detector.detect([batch["image"][i] for i in todo]) if todo else []
        for i, detection in zip(todo, found, strict=True):
            scores[i] = detection.score
            if detection.box is None:
                reasons[i], details[i] = NO_DETECTION, detection.reason or "the detector found no insect"
            else:
                boxes[i] = detection.box
        return {
            "shard": batch["shard"],
            "row": batch["row"],
            "reason": np.array(reasons, dtype=object),
            "detail": np.array(details, dtype=object),
            "box": boxes,
            "score": scores,
        }


def _rows(batch: dict[str, np.ndarray]) -> Iterator[tuple[int, RowDetection]]:
    for i in range(len(batch["row"])):
        reason = str(batch["reason"][i])
        box = None if reason else tuple(float(v) for v in batch["box"][i])
        found = RowDetection(int(batch["row"][i]), box, float(batch["score"][i]), reason, str(batch["detail"][i]))  # type: ignore[arg-type]
        yield int(batch["shard"][i]), found


def _detect_and_crop(
    config: CropConfig, pending: list[InputShard], settings: CropSettings, digest: str
) -> list[ShardCrops]:
    """Ray Data detection over `pending`; each shard's crop task starts when its last row is back."""
    ray.data.DataContext.get_current().enable_progress_bars = config.progress
    gpus = config.num_gpus if config.num_gpus is not None else (1.0 if ray.cluster_resources().get("GPU") else 0.0)
    # Ray sets OMP_NUM_THREADS to each actor's num_cpus: a torch detector uses `cpus_per_actor` threads.
    options = dict(config.detector_options)
    work = [(shard, np.arange(shard.samples)) for shard in pending]
    ds = ray.data.read_datasource(
        ShardPayloads(work, IMAGE, payload_samples), override_num_blocks=len(work), runtime_env=config.runtime_env
    )
    ds = ds.map_batches(
        _decode_batch, batch_format="pyarrow", batch_size=config.batch_size, memory=_TASK_MEMORY,
        runtime_env=config.runtime_env,
    )  # fmt: skip
    ds = ds.map_batches(
        _DetectActor,
        fn_constructor_kwargs={"name": config.detector, "options": options, "expected": digest},
        batch_format="numpy",
        batch_size=config.batch_size,
        compute=ray.data.ActorPoolStrategy(size=config.concurrency),
        num_cpus=config.cpus_per_actor,
        num_gpus=gpus,
        runtime_env=config.runtime_env,
    )
    task: Any = ray.remote(crop_shard).options(num_cpus=1, runtime_env=config.runtime_env)  # type: ignore[arg-type]
    by_number = {shard.number: shard for shard in pending}
    found: dict[int, list[RowDetection]] = {n: [] for n in by_number}
    refs = {}
    total = sum(shard.samples for shard in pending)
    with tqdm(total=total, desc=f"detect ({config.detector})", unit="img", disable=not config.progress) as bar:
        for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
            for number, row in _rows(batch):
                found[number].append(row)
                if len(found[number]) == by_number[number].samples:
                    refs[number] = task.remote(by_number[number], found.pop(number), settings)
            bar.update(len(batch["row"]))
    for number, rows in found.items():
        if by_number[number].samples:
            raise RuntimeError(f"{by_number[number].url}: {len(rows)} of {by_number[number].samples} rows came back")
        refs[number] = task.remote(by_number[number], [], settings)  # an empty shard: nothing to detect
    return [ray.get(refs[shard.number]) for shard in pending]


def crop_shards(config: CropConfig) -> CropReport:
    """Run the crop job of `config` (see the module docstring); returns what it did.

    Raises:
        FileNotFoundError: no input manifest (or no release metadata / images), or no checkpoint file where one
            was named.
        zoo.encoder.WeightsError: a checkpoint that needs unpickling or is not the detector's architecture.
        ValueError: unknown packages, preset or detector, or an input that is not originals.
    """
    clock, report = time.perf_counter(), CropReport(config.out)
    unknown = sorted(set(config.packages) - set(OUTPUT_PACKAGES))
    if unknown or not config.packages:
        raise ValueError(f"packages {list(config.packages)}: choose from {list(OUTPUT_PACKAGES)}")
    get_crop_preset(config.preset)
    inputs = read_inputs(config.shards, config.package, config.splits)
    shards = inputs.shards
    detector = create_detector(config.detector, **dict(config.detector_options))
    fingerprint, digest = detector.fingerprint(), detector_digest(detector)
    del detector  # the replicas build their own; the driver's copy checks the settings and names the weights
    settings = CropSettings(config.out, tuple(config.packages), config.preset, inputs.package, digest)
    kept = {s.number: c for s in shards if (c := reuse_shard(s, settings)) is not None}
    pending = [s for s in shards if s.number not in kept]
    report.seconds["plan"] = time.perf_counter() - clock
    made: dict[int, ShardCrops] = {}
    if pending:  # a rerun of a finished job starts no Ray at all
        with ray_runtime(config.ray_address, num_cpus=config.num_cpus):
            start = time.perf_counter()
            made = dict(
                zip([s.number for s in pending], _detect_and_crop(config, pending, settings, digest), strict=True)
            )
            report.seconds["pipeline"] = time.perf_counter() - start
    start = time.perf_counter()
    totals = publish(config, inputs, [kept.get(s.number) or made[s.number] for s in shards], fingerprint)
    report.seconds["publish"] = time.perf_counter() - start
    report.read, report.cropped, report.rejected = totals["read"], totals["written"], totals["rejected"]
    report.shards_kept, report.shards_written = len(kept), len(pending)
    report.seconds["total"] = time.perf_counter() - clock
    return report
