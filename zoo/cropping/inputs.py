"""What the crop job reads (**inputs** -> detection -> shard crops): an original shard set, or a release tree.

A shard set (`OUT/original_full`, `OUT/original_256`) is read shard by shard as its manifest lists them. A
release root (extracted image tree and/or the official zips, `bioscan_stream.layout.ImageStore`) is read in the
shards the converter would write of it (`bioscan_stream.shards.convert.plan_release_images`: validated metadata,
global vocabularies, the seeded plan per split at the default shard size). Each planned shard is one unit of work
with the converter's name, row order, samples (`bioscan_stream.shards.writer.image_samples`) and reject reasons,
so cropping a release gives the bytes that cropping its `bioscan-stream shards --package P` set gives, without
writing a copy of the originals first.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from bioscan_stream.constants import METADATA_CSV, METADATA_JSONLD, METADATA_ZIP, SPLITS
from bioscan_stream.layout import ImageStore
from bioscan_stream.release1m import is_release_1m
from bioscan_stream.schema import IMAGE, INDEX_FILE
from bioscan_stream.shards.convert import ConvertConfig, plan_release_images, vocabulary_entry
from bioscan_stream.shards.writer import image_samples
from bioscan_stream.storage import join_url, read_bytes, url_exists
from bioscan_stream.validate import Reject
from bioscan_stream.vocab import save_vocabularies
from zoo.embedding.sources import InputShard, list_input_shards, read_shard_samples

__all__ = ["INPUT_PACKAGES", "CropInputs", "ReleaseShard", "iter_samples", "payload_samples", "read_inputs"]

INPUT_PACKAGES = ("original_full", "original_256")


@dataclass(frozen=True)
class ReleaseShard(InputShard):
    """One planned shard of a release: its records and targets in plan order, read from the image store.

    `sha256` identifies the unit (package, metadata sha256, processids), not image bytes: like the converter's
    journal, a rerun keeps finished work unless the metadata or the plan changed.
    """

    root: str
    package: str
    records: pa.Table
    targets: pa.Table


@dataclass(frozen=True)
class CropInputs:
    """The job's units of work in output order and what the output manifests say of their source.

    `read`: records per selected split; `rejects`: records rejected before any image is read (a release's invalid
    metadata rows); `vocabularies`: the manifest entry and the bytes of its file (None: the input has none).
    """

    shards: list[InputShard]
    package: str
    read: dict[str, int]
    rejects: list[Reject]
    vocabularies: tuple[dict[str, Any], bytes] | None
    source: dict[str, Any]


@functools.lru_cache(maxsize=4)
def _store(root: str, package: str) -> ImageStore:
    """Per worker process: the zips' central directories are read once, not once per shard."""
    return ImageStore.open(root, package)


def iter_samples(shard: InputShard, members: frozenset[str]) -> Iterator[dict[str, Any] | Reject]:
    """A unit's samples in row order (members as bytes, as a tar reader gives them); a release's unreadable
    records as their `Reject`s in place."""
    if not isinstance(shard, ReleaseShard):
        yield from read_shard_samples(shard, members)
        return
    for sample in image_samples(shard.path, _store(shard.root, shard.package), shard.records, shard.targets):
        if isinstance(sample, Reject):
            yield sample
        else:
            yield {k: v.encode() if isinstance(v, str) and k[0] != "_" else v for k, v in sample.items()}


def payload_samples(shard: InputShard, members: frozenset[str]) -> Iterator[dict[str, Any]]:
    """`iter_samples` for the detection read: a rejected row keeps its place with an empty image (the crop task
    reports its own reason)."""
    for sample in iter_samples(shard, members):
        yield {IMAGE: b""} if isinstance(sample, Reject) else sample


def _shard_set(shards: str, splits: tuple[str, ...] | None) -> CropInputs:
    """The input shard set's shards of `splits` (all of the manifest's by default), checked to be originals."""
    if not url_exists(join_url(shards, INDEX_FILE)) and any(
        Path(shards, name).is_file() for name in (METADATA_CSV, METADATA_JSONLD, METADATA_ZIP)
    ):
        raise FileNotFoundError(
            f"{shards} is a release root: name its images with --package {'|'.join(INPUT_PACKAGES)}"
        )
    found, manifest = list_input_shards(shards, splits or ())
    if splits is None:
        found, manifest = list_input_shards(shards, tuple(manifest.get("splits", {})))
    package = manifest.get("package")
    if package not in INPUT_PACKAGES:
        raise ValueError(f"{shards}: a {package!r} shard set; the crop job reads {' or '.join(INPUT_PACKAGES)}")
    entry = manifest.get("vocabularies")
    vocabularies = (entry, read_bytes(join_url(shards, entry["file"]))) if entry else None
    read = {split: sum(s.samples for s in found if s.split == split) for split in dict.fromkeys(s.split for s in found)}
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    source = {"shards": shards, "package": package, "manifest_sha256": digest}
    return CropInputs(found, package, read, [], vocabularies, source)


def _release(root: str, package: str, splits: tuple[str, ...] | None) -> CropInputs:
    """The converter's plan of the release under `root` (its default seed and shard size) as units of work."""
    if package not in INPUT_PACKAGES:
        raise ValueError(f"package {package!r}: the crop job reads {' or '.join(INPUT_PACKAGES)}")
    if is_release_1m(root):
        raise ValueError(f"{root}: a BIOSCAN-1M release; convert it with `bioscan-stream shards` and crop the shards")
    config = ConvertConfig(root, "", package=package, splits=splits or SPLITS)
    records, plan = plan_release_images(config)
    shards: list[InputShard] = []
    for number, spec in enumerate(plan):
        rows = pa.array(spec.rows, pa.int64())
        table, targets = records.table.take(rows), records.targets.take(rows)
        identity = "\n".join([package, records.metadata_sha256, *table["processid"].to_pylist()])
        sha256 = hashlib.sha256(identity.encode()).hexdigest()
        url = f"{root} ({package} {spec.path})"
        shards.append(
            ReleaseShard(number, spec.split, spec.path, url, len(spec.rows), sha256, root, package, table, targets)
        )
    with tempfile.TemporaryDirectory(prefix="bioscan-crop-vocab-") as tmp:
        vocab_bytes = save_vocabularies(records.vocabularies, Path(tmp, "vocab.json")).read_bytes()
    source = {
        "root": root, "package": package, "metadata": Path(records.metadata).name,
        "metadata_sha256": records.metadata_sha256, "seed": config.seed, "shard_bytes": config.shard_bytes,
        "min_shards": config.min_shards,
    }  # fmt: skip
    vocabularies = (vocabulary_entry(records.vocabularies), vocab_bytes)
    return CropInputs(shards, package, records.read, list(records.rejects), vocabularies, source)


def read_inputs(shards: str, package: str | None, splits: Sequence[str] | None) -> CropInputs:
    """The job's inputs: the shard set at `shards`, or with `package` the release root at `shards`."""
    chosen = tuple(splits) if splits is not None else None
    return _shard_set(shards, chosen) if package is None else _release(shards, package, chosen)
