"""One shard, written or resumed (plan -> **writer** -> manifest): the body of every conversion task.

An image shard holds, per record, the image bytes exactly as in the release (checked to be a JPEG, never
re-encoded), the barcode text, all 23 metadata fields as JSON and the integer targets per rank. A DNA
shard holds unique barcodes and how many records carry each. Records whose image is missing or
unreadable become `Reject`s instead of samples, so `written + rejected` always equals the shard's rows.

Fault model: the tar is committed atomically (local rename, or one S3 PUT of a finished local file),
then a small journal record (`_journal/<split>-NNNNNN.json`: ShardInfo, plan digest, rejects) is
committed the same way. A rerun reuses a shard only when its journal names the same plan digest and the
tar still hashes to the recorded sha256; anything else is rewritten. Writing is deterministic, so a
rewrite yields the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import struct
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa

from bioscan_stream.layout import CorruptImage, ImageReader, MissingImage
from bioscan_stream.metadata import json_objects
from bioscan_stream.schema import COUNT, DNA, IMAGE, METADATA, TARGETS
from bioscan_stream.shards.tarwriter import ShardInfo, write_tar
from bioscan_stream.storage import is_s3, join_url, open_url, put_file, url_exists
from bioscan_stream.validate import MISSING_IMAGE, UNREADABLE_IMAGE, InvalidRecordError, Reject

__all__ = [
    "ShardJob",
    "ShardResult",
    "jpeg_problem",
    "image_sample",
    "sample_texts",
    "dna_key",
    "dna_sample",
    "write_image_shard",
    "write_dna_shard",
    "sha256_url",
    "JOURNAL_DIR",
    "journal_url",
    "read_journal",
    "write_journal",
    "commit_tar",
    "image_samples",
]

_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
#: Start-of-frame markers (baseline, progressive, lossless, arithmetic); 0xC4/0xC8/0xCC are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_SOS = 0xDA
#: A marker segment's start: 0xFF, the marker, the big-endian segment length.
_SEGMENT = struct.Struct(">BBH")
_HASH_CHUNK = 1 << 20
#: Folder of the journal records, beside a shard set's split folders.
JOURNAL_DIR = "_journal"


@dataclass(frozen=True)
class ShardJob:
    """Where one shard goes: its URL, its journal record's URL, and whether problems raise (strict)."""

    path: str
    url: str
    journal_url: str
    strict: bool = False


@dataclass(frozen=True)
class ShardResult:
    """A finished shard: what the manifest records, the records rejected from it, and whether it was reused."""

    path: str
    info: ShardInfo
    digest: str
    rejects: tuple[Reject, ...] = ()
    reused: bool = False


def _scan_start(data: bytes) -> int | str:
    """Offset of the first start-of-scan marker, after a frame header (SOF) of non-zero width; else the problem.

    One `unpack_from` per segment (marker prefix, marker, length) instead of indexing and slicing: half the
    cost (~3 us per image), which a byte copier notices.
    """
    pos, frame, size = 2, False, len(data)
    while pos + 4 <= size:
        prefix, marker, length = _SEGMENT.unpack_from(data, pos)
        if prefix != 0xFF:
            return f"corrupt JPEG header: no marker at byte {pos}"
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # fill byte or standalone marker
            pos += 1 if marker == 0xFF else 2
            continue
        if length < 2:
            return f"corrupt JPEG header: segment 0x{marker:02X} of length {length} at byte {pos}"
        if marker in _JPEG_SOF:
            frame = True
            if pos + 9 > size or data[pos + 7] == data[pos + 8] == 0:
                return "corrupt JPEG header: frame of zero width"  # (height 0 is legal: set later by DNL)
        if marker == _JPEG_SOS:
            return pos if frame else "corrupt JPEG header: scan before any frame header"
        pos += 2 + length
    return "corrupt JPEG header: no start-of-scan marker"


def jpeg_problem(data: bytes) -> str | None:
    """None for a plausible, complete JPEG, else what is wrong: SOI, marker segments up to the scan, EOI.

    Why not decode: a decode costs ~500 us and PIL's header parse ~100 us per 29 KB image; this costs a
    few us, and a byte copier must stay near the raw tar limit (benchmarks/bench_convert.py). The
    end-of-image marker is searched after the scan start, since entropy-coded data never holds FF D9
    and cameras append trailers after it (the fixture photos carry 2 KB) or embed thumbnails before it.
    """
    if not data:
        return "empty file"
    if not data.startswith(_JPEG_SOI):
        return f"not a JPEG (starts with {data[:4].hex()})"
    scan = _scan_start(data)
    if isinstance(scan, str):
        return scan
    if data.rfind(_JPEG_EOI, scan) < 0:  # from the end: the marker is normally in the last 2 bytes
        return "truncated JPEG (no end-of-image marker)"
    return None


def sample_texts(records: pa.Table, targets: pa.Table) -> tuple[list[str], list[str]]:
    """Metadata JSON (every field, missing and non-finite = null: strict JSON) and targets JSON of each record.

    Built for the whole shard by Arrow kernels (`json_objects`): ~1 us per record instead of ~13 us for two
    Python `json` encodes per record, about a tenth of a byte copier's budget (benchmarks/bench_convert.py).
    """
    metadata = json_objects(records, compact=True, nan_as_null=True).to_pylist()
    return metadata, json_objects(targets, compact=True).to_pylist()


def image_sample(processid: str, image: bytes, dna: str, metadata: str, targets: str) -> dict[str, bytes | str]:
    """The tar sample of one record, members in schema order."""
    return {"__key__": processid, IMAGE: image, DNA: dna, METADATA: metadata, TARGETS: targets}


def dna_key(sequence: str) -> str:
    """Content-derived sample key of a unique barcode (128 bits of sha256: no collisions at 2.5M)."""
    return hashlib.sha256(sequence.encode("ascii")).hexdigest()[:32]


def dna_sample(sequence: str, count: int) -> dict[str, bytes | str]:
    return {"__key__": dna_key(sequence), DNA: sequence, COUNT: str(int(count))}


def sha256_url(url: str) -> str:
    """Stream a local file or S3 object through sha256."""
    digest = hashlib.sha256()
    with open_url(url, "rb") as src:
        while chunk := src.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def journal_url(base: str, shard_path: str) -> str:
    """The journal record of the shard at `shard_path` (e.g. `train/train-000003.tar`) of the set at `base`."""
    return join_url(base, JOURNAL_DIR, PurePosixPath(shard_path).name.removesuffix(".tar") + ".json")


def read_journal(url: str) -> dict[str, Any] | None:
    """A journal record, or None when there is none or it does not parse (torn: its shard is rewritten)."""
    if not url_exists(url):
        return None
    with open_url(url, "rb") as src:
        data = src.read()
    try:
        record = json.loads(data)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def write_journal(url: str, record: dict[str, Any]) -> None:
    """Commit a journal record (atomically, after the shards it names)."""
    # Not fsynced: a journal torn by a power cut fails to parse and one that outlives its shard's data fails
    # the sha256 check, so the shard is rewritten either way; an fsync here (ext4 commits the shard's
    # data with it) cost 5-20 us per sample (benchmarks/bench_convert.py, 2026-11).
    with open_url(url, "wb", durable=False) as out:
        out.write(json.dumps(record, indent=1).encode("utf-8"))


def commit_tar(url: str, samples: Iterable[Mapping[str, bytes | str]]) -> ShardInfo:
    """`write_tar` to a local path or an S3 URL, atomically either way (S3: one PUT of a finished local file)."""
    if not is_s3(url):
        return write_tar(url, samples)
    with tempfile.TemporaryDirectory(prefix="bioscan-shard-") as tmp:
        local = Path(tmp, PurePosixPath(url).name)
        info = write_tar(local, samples)
        put_file(local, url)
    return info


def _reuse(job: ShardJob, digest: str) -> ShardResult | None:
    """The recorded result when the journal matches this plan and the tar hashes as recorded."""
    record = read_journal(job.journal_url)
    if record is None or not url_exists(job.url):
        return None
    try:
        info = ShardInfo(**record["shard"])
        rejects = tuple(Reject(**r) for r in record["rejects"])
    except (KeyError, TypeError):  # a journal from another version: rewrite the shard
        return None
    if record.get("digest") != digest or sha256_url(job.url) != info.sha256:
        return None
    return ShardResult(job.path, info, digest, rejects, reused=True)


def _commit(
    job: ShardJob, digest: str, samples: Iterable[Mapping[str, bytes | str]], rejects: list[Reject]
) -> ShardResult:
    """Write the tar (atomically, locally or to S3), then its journal record; return the result."""
    info = commit_tar(job.url, samples)
    write_journal(job.journal_url, {"shard": asdict(info), "digest": digest, "rejects": [asdict(r) for r in rejects]})
    return ShardResult(job.path, info, digest, tuple(rejects))


def image_samples(
    shard_path: str, store: ImageReader, records: pa.Table, targets: pa.Table
) -> Iterator[dict[str, bytes | str] | Reject]:
    """Each record's tar sample, or its `Reject` (missing or unreadable image), in record order.

    `targets` has one int64 column per rank, row for row with `records`; `shard_path` names the shard in details.
    """
    metadata, target_texts = sample_texts(records, targets)
    dna = records["dna_barcode"].to_pylist() if "dna_barcode" in records.column_names else [None] * len(records)
    columns = (records["processid"].to_pylist(), records["split"].to_pylist(), dna, metadata, target_texts)
    for pid, split, barcode, meta, target in zip(*columns, strict=True):
        try:
            image = store.read(pid, split)
            problem = jpeg_problem(image)
            reject = None if problem is None else Reject(pid, split, UNREADABLE_IMAGE, f"{shard_path}: {problem}")
        except MissingImage as error:
            reject = Reject(pid, split, MISSING_IMAGE, str(error))
        except CorruptImage as error:  # an entry that exists but is not bytes (e.g. a bad HDF5 dataset)
            reject = Reject(pid, split, UNREADABLE_IMAGE, f"{shard_path}: {error}")
        yield image_sample(pid, image, barcode or "", meta, target) if reject is None else reject


def _kept_samples(
    job: ShardJob, samples: Iterable[dict[str, bytes | str] | Reject], rejects: list[Reject]
) -> Iterator[dict[str, bytes | str]]:
    """The samples; every `Reject` is appended to `rejects` (or raises, strict)."""
    for sample in samples:
        if not isinstance(sample, Reject):
            yield sample
        elif job.strict:
            raise InvalidRecordError(sample)
        else:
            rejects.append(sample)


def write_image_shard(job: ShardJob, store: ImageReader, records: pa.Table, targets: pa.Table) -> ShardResult:
    """Write (or verify and reuse) one image shard of `records` (rows in the given, shuffled order).

    `targets` has one int64 column per rank, row for row with `records`.
    """
    digest = hashlib.sha256("\n".join(records["processid"].to_pylist()).encode("utf-8")).hexdigest()
    reused = _reuse(job, digest)
    if reused is not None:
        return reused
    rejects: list[Reject] = []
    samples = _kept_samples(job, image_samples(job.path, store, records, targets), rejects)
    return _commit(job, digest, samples, rejects)


def write_dna_shard(job: ShardJob, sequences: Sequence[str], counts: Sequence[int]) -> ShardResult:
    """Write (or verify and reuse) one DNA-only shard of unique barcodes with their record counts."""
    digest = hashlib.sha256("\n".join(f"{s}\t{c}" for s, c in zip(sequences, counts, strict=True)).encode()).hexdigest()
    reused = _reuse(job, digest)
    if reused is not None:
        return reused
    samples = (dna_sample(seq, count) for seq, count in zip(sequences, counts, strict=True))
    return _commit(job, digest, samples, [])
