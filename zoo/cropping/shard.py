"""One input shard's crops (detections -> **shard** -> `cropped` / `cropped_256` tars): the crop job's CPU task.

Given every row's detection, the task reads its input once more (a shard: all members, sha256 and count checked;
a release's planned shard: from the image store, unreadable records as rejects, `zoo.cropping.inputs`),
cuts each detected box out with the crop preset (`bioscan_stream.crop.crop_with_preset`), encodes the crops and
writes one tar per output package with the shard writer (`commit_tar`): same key, barcode and targets as
the input, the image replaced by the crop, and the metadata's size fields (`area_fraction`, `scale_factor`)
recomputed from the new box. Rows without a usable box become `Reject`s. Then a journal record (the tars' sha256,
every box and score, the rejects) is committed (`write_journal`, beside the converter's): a rerun keeps the shard
when the record names the same inputs and settings and the tars still hash as recorded, so a job killed with
`kill -9` resumes with identical output.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image

from bioscan_stream.constants import ORIGINAL_SIZE, RESIZED_SHORT_SIDE
from bioscan_stream.crop import crop_with_preset, short_side_size
from bioscan_stream.schema import DNA, IMAGE, METADATA, TARGETS
from bioscan_stream.shards.tarwriter import ShardInfo
from bioscan_stream.shards.writer import commit_tar, image_sample, journal_url, read_journal, sha256_url, write_journal
from bioscan_stream.sizes import size_fields
from bioscan_stream.storage import join_url, url_exists
from bioscan_stream.synth.images import encode_jpeg
from bioscan_stream.validate import BOX_OUTSIDE_IMAGE, NO_DETECTION, UNREADABLE_IMAGE, Reject
from zoo.cropping.inputs import iter_samples
from zoo.embedding.sources import InputShard

__all__ = [
    "BoxRow", "CropSettings", "RowDetection", "ShardCrops",
    "crop_shard", "original_box", "original_size", "reuse_shard",
]  # fmt: skip

_MEMBERS = frozenset({IMAGE, DNA, METADATA, TARGETS})


@dataclass(frozen=True)
class CropSettings:
    """What every shard's crops depend on: output root, packages, preset, input package, and their digest."""

    out: str
    packages: tuple[str, ...]
    preset: str
    input_package: str
    detector_sha256: str

    def digest(self, shard: InputShard) -> str:
        """Identity of one shard's output: the input shard's bytes and every setting that shapes the crops."""
        parts = {"source_sha256": shard.sha256, "source": shard.path, **asdict(self)}
        parts.pop("out")
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class RowDetection:
    """The detector's answer for one row: a box in the input image's pixels and a score, or a reject reason."""

    row: int
    box: tuple[float, float, float, float] | None
    score: float
    reason: str = ""
    detail: str = ""


@dataclass(frozen=True)
class BoxRow:
    """One line of the bbox table (raw box in ORIGINAL pixels, rounded like the tool) plus the detector's score."""

    processid: str
    split: str
    width_original: int
    height_original: int
    x0: int
    y0: int
    x1: int
    y1: int
    scale_factor: float
    area_fraction: float
    score: float


@dataclass
class ShardCrops:
    """A finished input shard: its output tars per package, boxes, rejects, and whether an earlier run made it."""

    source: str
    split: str
    shards: dict[str, ShardInfo]
    boxes: list[BoxRow]
    rejects: list[Reject] = field(default_factory=list)
    reused: bool = False


def original_size(size: tuple[int, int], input_package: str) -> tuple[int, int]:
    """(W, H) of the original an input image was made from: itself, or for `original_256` the 1024x768 original
    it was resized from (any other size scaled back by 768 / 256)."""
    if input_package != "original_256":
        return size
    if short_side_size(ORIGINAL_SIZE) == size:
        return ORIGINAL_SIZE
    scale = min(ORIGINAL_SIZE) / RESIZED_SHORT_SIDE
    return round(size[0] * scale), round(size[1] * scale)


def original_box(
    box: Sequence[float], size: tuple[int, int], original: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """The box clipped to the image and scaled to original pixels, rounded like the tool; None if nothing is left."""
    width, height = size
    x0, y0, x1, y1 = (min(max(v, 0.0), limit) for v, limit in zip(box, (width, height, width, height), strict=True))
    sx, sy = original[0] / width, original[1] / height
    rounded = round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)
    return rounded if rounded[2] > rounded[0] and rounded[3] > rounded[1] else None


def _crop_sample(
    sample: dict[str, Any], split: str, found: RowDetection, settings: CropSettings
) -> tuple[dict[str, bytes], BoxRow] | Reject:
    """The encoded crops of one sample (per package) and its bbox row, or why it cannot be cropped."""
    key = sample["__key__"]
    if found.box is None:
        return Reject(key, split, found.reason or NO_DETECTION, found.detail)
    try:
        with Image.open(io.BytesIO(sample[IMAGE])) as raw:
            image = raw.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        return Reject(key, split, UNREADABLE_IMAGE, f"{error}")
    original = original_size(image.size, settings.input_package)
    box = original_box(found.box, image.size, original)
    if box is None:
        return Reject(key, split, BOX_OUTSIDE_IMAGE, f"box {tuple(round(v, 1) for v in found.box)} on {image.size}")
    in_image = [v * s for v, s in zip(box, (image.width / original[0], image.height / original[1]) * 2, strict=True)]
    cropped, cropped_256 = crop_with_preset(image, in_image, settings.preset)
    area_fraction, scale_factor = size_fields(box, original)
    encoded = {"cropped": cropped, "cropped_256": cropped_256}
    crops = {package: encode_jpeg(encoded[package]) for package in settings.packages}  # the release's quality
    return crops, BoxRow(key, split, *original, *box, float(scale_factor), float(area_fraction), found.score)


def _with_size_fields(metadata: bytes, row: BoxRow) -> str:
    """The sample's metadata JSON with the size fields of the new box (every other field as it was)."""
    record = json.loads(metadata)
    record["area_fraction"], record["scale_factor"] = row.area_fraction, row.scale_factor
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def reuse_shard(shard: InputShard, settings: CropSettings) -> ShardCrops | None:
    """The journal's record of this shard when it names the same digest and every tar still hashes as recorded."""
    record = read_journal(journal_url(settings.out, shard.path))
    if record is None:
        return None
    try:
        infos = {p: ShardInfo(**info) for p, info in record["shards"].items()}
        crops = ShardCrops(shard.path, shard.split, infos, [BoxRow(**b) for b in record["boxes"]])
        crops.rejects = [Reject(**r) for r in record["rejects"]]
    except (AttributeError, KeyError, TypeError):  # another version's journal: redo the shard
        return None
    if record.get("digest") != settings.digest(shard) or sorted(infos) != sorted(settings.packages):
        return None
    tars = {p: join_url(settings.out, p, shard.path) for p in infos}
    if any(not url_exists(url) or sha256_url(url) != infos[p].sha256 for p, url in tars.items()):
        return None
    crops.reused = True
    return crops


def crop_shard(shard: InputShard, detections: Sequence[RowDetection], settings: CropSettings) -> ShardCrops:
    """Crop one input shard (or keep what an earlier run wrote for it); see the module docstring."""
    reused = reuse_shard(shard, settings)
    if reused is not None:
        return reused
    by_row = {d.row: d for d in detections}
    outputs: dict[str, list[dict[str, bytes | str]]] = {p: [] for p in settings.packages}
    crops = ShardCrops(shard.path, shard.split, {}, [])
    for row, sample in enumerate(iter_samples(shard, _MEMBERS)):
        if isinstance(sample, Reject):  # a release's record without a readable image
            crops.rejects.append(sample)
            continue
        missing = RowDetection(row, None, 0.0, NO_DETECTION, "the detector returned nothing for this row")
        made = _crop_sample(sample, shard.split, by_row.get(row, missing), settings)
        if isinstance(made, Reject):
            crops.rejects.append(made)
            continue
        images, box_row = made
        crops.boxes.append(box_row)
        metadata = _with_size_fields(sample[METADATA], box_row) if METADATA in sample else "{}"
        dna, targets = sample.get(DNA, b"").decode(), sample.get(TARGETS, b"{}").decode()
        for package, data in images.items():
            outputs[package].append(image_sample(box_row.processid, data, dna, metadata, targets))
    for package, samples in outputs.items():
        crops.shards[package] = commit_tar(join_url(settings.out, package, shard.path), samples)
    record = {
        "digest": settings.digest(shard),
        "shards": {p: asdict(info) for p, info in crops.shards.items()},
        "boxes": [asdict(b) for b in crops.boxes],
        "rejects": [asdict(r) for r in crops.rejects],
    }
    write_journal(journal_url(settings.out, shard.path), record)
    return crops
