"""What the crop job publishes once every shard is cropped (shards -> **outputs**): manifests, bbox table, review.

Per output package (`OUT/cropped`, `OUT/cropped_256`): `rejects.jsonl` (with a release's invalid metadata rows),
the input's `vocab.json` (targets are copied unchanged) and, last, `index.json` in the shard converter's layout,
so `bioscan-stream verify` and the stream read them like any shard set. Beside them:
`OUT/BIOSCAN_5M_Insect_bbox.tsv` (the official columns, raw box in original pixels,
`bioscan_stream.metadata.read_bbox` reads it), `OUT/review.tsv` (the lowest-confidence images first) and
`OUT/contact_sheet.png` (those images with their boxes, beside their crops). Everything is sorted by input order
or by (score, processid), so a rerun writes the same bytes.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from PIL import Image, ImageDraw, ImageFont

from bioscan_stream.constants import BBOX_COLUMNS, BBOX_TSV
from bioscan_stream.crop import crop_geometry, crop_with_preset, get_crop_preset
from bioscan_stream.metadata import write_bbox
from bioscan_stream.schema import IMAGE, IMAGE_SHARD_MEMBERS, INDEX_FILE, REJECTS_FILE, SCHEMA_VERSION
from bioscan_stream.shards.manifest import library_versions, put_via_local, shard_entries, split_totals, write_json
from bioscan_stream.shards.writer import ShardResult
from bioscan_stream.storage import join_url, put_file
from bioscan_stream.validate import Reject, RejectsReport
from zoo.cropping.inputs import CropInputs, iter_samples
from zoo.cropping.shard import BoxRow, ShardCrops
from zoo.embedding.sources import InputShard

if TYPE_CHECKING:
    from zoo.cropping.pipeline import CropConfig

__all__ = ["REVIEW_FILE", "SHEET_FILE", "contact_sheet", "publish", "review_rows"]

REVIEW_FILE = "review.tsv"
SHEET_FILE = "contact_sheet.png"
_REVIEW_COLUMNS = ("processid", "split", "score", "x0", "y0", "x1", "y1", "width_original", "height_original")
_TILE_HEIGHT = 192
_CAPTION = 16


def review_rows(boxes: Sequence[BoxRow], count: int) -> list[BoxRow]:
    """The `count` lowest-confidence boxes, lowest first (ties by processid)."""
    return sorted(boxes, key=lambda b: (b.score, b.processid))[:count]


def _tile(data: bytes, row: BoxRow, preset: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> Image.Image:
    """The original (raw box red, crop window blue) beside its `cropped_256`, captioned with processid and score."""
    with Image.open(io.BytesIO(data)) as raw:
        image = raw.convert("RGB")
    scale_x, scale_y = image.width / row.width_original, image.height / row.height_original
    box = (row.x0 * scale_x, row.y0 * scale_y, row.x1 * scale_x, row.y1 * scale_y)
    _, crop = crop_with_preset(image, box, preset)
    settings = get_crop_preset(preset)
    window = crop_geometry(box, ratio=settings.ratio, aspect=settings.aspect).box
    thumb_scale = _TILE_HEIGHT / image.height
    thumb = image.resize((round(image.width * thumb_scale), _TILE_HEIGHT), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(thumb)
    draw.rectangle([v * thumb_scale for v in window], outline=(40, 90, 255), width=1)
    draw.rectangle([v * thumb_scale for v in box], outline=(255, 30, 30), width=2)
    crop = crop.resize((max(1, round(crop.width * _TILE_HEIGHT / crop.height)), _TILE_HEIGHT))
    tile = Image.new("RGB", (thumb.width + crop.width + 4, _TILE_HEIGHT + _CAPTION), "white")
    tile.paste(thumb, (0, 0))
    tile.paste(crop, (thumb.width + 4, 0))
    ImageDraw.Draw(tile).text(
        (3, _TILE_HEIGHT + 2), f"{row.processid}  score {row.score:.3f}", fill=(0, 0, 0), font=font
    )
    return tile


def contact_sheet(
    shards: Sequence[InputShard], rows: Sequence[BoxRow], preset: str, *, columns: int = 3
) -> Image.Image | None:
    """A grid of `rows`' originals with their boxes beside their crops (None when there are none)."""
    wanted = {row.processid: row for row in rows}
    images: dict[str, bytes] = {}
    for shard in shards:
        for sample in iter_samples(shard, frozenset({IMAGE})):
            if not isinstance(sample, Reject) and sample["__key__"] in wanted:
                images[sample["__key__"]] = sample[IMAGE]
    font = ImageFont.load_default()
    tiles = [_tile(images[row.processid], row, preset, font) for row in rows if row.processid in images]
    if not tiles:
        return None
    width, height = max(t.width for t in tiles), max(t.height for t in tiles)
    sheet = Image.new("RGB", (columns * width, -(-len(tiles) // columns) * height), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * width, (i // columns) * height))
    return sheet


def _bbox_table(boxes: Sequence[BoxRow]) -> pa.Table:
    records = [asdict(b) for b in boxes]
    return pa.table({name: [r[name] for r in records] for name in BBOX_COLUMNS})


def _put_bytes(url: str, data: bytes, name: str) -> None:
    put_via_local(lambda path: Path(path).write_bytes(data), url, name)


def _write_tables(config: CropConfig, shards: Sequence[InputShard], crops: Sequence[ShardCrops]) -> None:
    """The bbox TSV, the review list and the contact sheet under `config.out`."""
    boxes = [b for c in crops for b in c.boxes]
    with tempfile.TemporaryDirectory(prefix="bioscan-crop-bbox-") as tmp:
        put_file(write_bbox(_bbox_table(boxes), tmp), join_url(config.out, BBOX_TSV))
    low = review_rows(boxes, config.review)
    lines = ["\t".join(_REVIEW_COLUMNS)]
    lines += [
        "\t".join(f"{getattr(b, c):.4f}" if c == "score" else str(getattr(b, c)) for c in _REVIEW_COLUMNS) for b in low
    ]
    _put_bytes(join_url(config.out, REVIEW_FILE), ("\n".join(lines) + "\n").encode(), REVIEW_FILE)
    shown = {b.processid for b in low[: config.sheet]}
    holding = {c.source for c in crops if any(b.processid in shown for b in c.boxes)}  # read only these shards
    sheet = contact_sheet([s for s in shards if s.path in holding], low[: config.sheet], config.preset)
    if sheet is not None:
        buffer = io.BytesIO()
        sheet.save(buffer, format="PNG", compress_level=6)  # optimize=True: ~2 s more per job for ~10% bytes
        _put_bytes(join_url(config.out, SHEET_FILE), buffer.getvalue(), SHEET_FILE)


def _package_manifest(
    package: str, inputs: CropInputs, crops: Sequence[ShardCrops], rejects: Sequence[Reject], parameters: dict[str, Any]
) -> dict[str, Any]:
    results = [ShardResult(c.source, c.shards[package], "") for c in crops]
    entries = shard_entries(results, inputs.read)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "kind": "image",
        "package": package,
        "key": "processid",
        "members": list(IMAGE_SHARD_MEMBERS),
        "splits": entries,
        "totals": split_totals(inputs.read, {s: e["samples"] for s, e in entries.items()}, rejects),
        "rejects": {"file": REJECTS_FILE, "count": len(rejects)},
        **({"vocabularies": inputs.vocabularies[0]} if inputs.vocabularies else {}),
        "source": inputs.source,
        "parameters": parameters,
        "bbox": f"../{BBOX_TSV}",
        "versions": library_versions(),
    }
    return manifest


def publish(
    config: CropConfig, inputs: CropInputs, crops: Sequence[ShardCrops], fingerprint: dict[str, Any]
) -> dict[str, int]:
    """Write every package's rejects, vocabularies and manifest (last), then the tables; returns the totals."""
    preset = get_crop_preset(config.preset)
    parameters = {"detector": fingerprint, "preset": asdict(preset), "packages": list(config.packages)}
    _write_tables(config, inputs.shards, crops)
    rejects = inputs.rejects + [r for c in crops for r in c.rejects]
    for package in config.packages:
        base = join_url(config.out, package)
        put_via_local(RejectsReport(list(rejects)).write, join_url(base, REJECTS_FILE), REJECTS_FILE)
        if inputs.vocabularies:
            entry, data = inputs.vocabularies
            _put_bytes(join_url(base, entry["file"]), data, entry["file"])
        manifest = _package_manifest(package, inputs, crops, rejects, parameters)
        write_json(join_url(base, INDEX_FILE), manifest)
    totals = manifest["totals"].values()
    return {k: sum(t[k] for t in totals) for k in ("read", "written", "rejected")}
