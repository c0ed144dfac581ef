"""Inputs of the embedding job: the shard manifest -> per-shard label rows, and raw payloads for Ray Data.

Two reads of each input shard, both with the project's tar parser (`bioscan_stream.stream.tarreader`):

1. `read_label_rows` (a Ray task per shard, before anything is written): the store's label columns from the
   `json` and `targets.json` members, a digest of each barcode for DNA deduplication, and the shard's sha256
   and sample count checked against the manifest, so a damaged shard stops the job by name up front;
2. `ShardPayloads` (a Ray Data datasource, one read task per shard): the raw bytes of the member the encoder
   reads (`jpg`, `dna.txt` or `json`), only for the rows that need a forward pass, never decoded here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from bioscan_stream.constants import LABEL_COLUMNS
from bioscan_stream.schema import DNA, INDEX_FILE, METADATA, TARGETS
from bioscan_stream.storage import join_url, open_url, read_bytes
from bioscan_stream.stream.tarreader import CorruptShardError, TarFormatError, iter_tar_samples
from zoo.embedding.store import LABEL_CODE_COLUMNS

__all__ = [
    "InputShard",
    "PayloadsInObjectStore",
    "ShardPayloads",
    "labels_and_payloads",
    "list_input_shards",
    "read_label_rows",
    "read_shard_samples",
]

#: A payload read task yields a block at whichever comes first: ~8 MB of payload (~280 JPEGs of ~29 KB) or
#: 4,096 rows (~2.7 MB of barcodes); fewer, larger blocks keep Ray Data's per-block overhead off cheap models.
BLOCK_BYTES = 8 << 20
BLOCK_ROWS = 4096
DIGEST = "_digest"
EMPTY = "_empty"
PAYLOAD = "_payload"


@dataclass(frozen=True)
class InputShard:
    """One shard of the input set: its position in job order, split, manifest path, URL, count and sha256."""

    number: int
    split: str
    path: str
    url: str
    samples: int
    sha256: str | None


def list_input_shards(shards: str, splits: Sequence[str]) -> tuple[list[InputShard], dict[str, Any]]:
    """The shards of `splits` in manifest order (splits in the order given) and the manifest itself."""
    manifest_url = join_url(shards, INDEX_FILE)
    try:
        manifest = json.loads(read_bytes(manifest_url))
    except FileNotFoundError:
        raise FileNotFoundError(f"{manifest_url}: no shard manifest (run `bioscan-stream shards` first)") from None
    missing = [s for s in splits if s not in manifest.get("splits", {})]
    if missing:
        raise KeyError(f"{manifest_url}: no split(s) {missing}; it has {list(manifest.get('splits', {}))}")
    found: list[InputShard] = []
    for split in splits:
        for entry in manifest["splits"][split]["shards"]:
            path = str(entry["path"])
            number = len(found)
            found.append(InputShard(number, split, path, join_url(shards, path), entry["samples"], entry.get("sha256")))
    return found, manifest


class _HashingReader:
    """A read-only stream that hashes every byte read from it (the shard's sha256 in the same pass)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream, self.digest = stream, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.digest.update(data)
        return data


def read_shard_samples(shard: InputShard, members: frozenset[str]) -> Iterator[dict[str, Any]]:
    """Samples of the shard; any damage (format, count, sha256) raises `CorruptShardError` naming it."""
    try:
        with open_url(shard.url, "rb") as raw:
            stream = _HashingReader(raw)
            count = 0
            for sample in iter_tar_samples(stream, shard.url, members):  # type: ignore[arg-type]
                count += 1
                yield sample
            while stream.read(1 << 20):
                pass
    except (TarFormatError, OSError) as error:
        if isinstance(error, CorruptShardError):
            raise
        raise CorruptShardError(shard.url, str(error)) from error
    if count != shard.samples:
        raise CorruptShardError(shard.url, f"{count} samples, the manifest says {shard.samples}")
    if shard.sha256 and stream.digest.hexdigest() != shard.sha256:
        raise CorruptShardError(shard.url, f"sha256 {stream.digest.hexdigest()} != manifest {shard.sha256}")


def _json_lines(members: list[bytes], schema: pa.Schema) -> pa.Table:
    """Parse one JSON object per member with Arrow's reader (~50x faster than json.loads per row here)."""
    if not members:
        return schema.empty_table()
    data = b"\n".join(m.replace(b"\n", b" ") for m in members)  # an object may span lines; records may not
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    table = pajson.read_json(pa.BufferReader(data), parse_options=options)
    if table.num_rows != len(members):
        raise ValueError(f"{len(members)} JSON members parsed into {table.num_rows} rows")
    return table


def _label_columns(metadata: list[bytes], targets: list[bytes]) -> dict[str, pa.Array]:
    """Label strings (empty = missing) and their global codes (missing key = -1) of a shard's samples."""
    names = _json_lines(metadata, pa.schema([(name, pa.string()) for name in LABEL_COLUMNS]))
    codes = _json_lines(targets, pa.schema([(name, pa.int32()) for name in LABEL_COLUMNS]))
    columns: dict[str, pa.Array] = {}
    for name in LABEL_COLUMNS:
        column = names.column(name).combine_chunks()
        columns[name] = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
    for name, code in zip(LABEL_COLUMNS, LABEL_CODE_COLUMNS, strict=True):
        columns[code] = codes.column(name).combine_chunks().fill_null(-1)
    return columns


def read_label_rows(shard: InputShard, *, with_dna: bool) -> pa.Table:
    """The store's non-embedding columns of every sample of `shard` (+ for DNA: barcode digest, emptiness, bytes)."""
    members = frozenset({METADATA, TARGETS} | ({DNA} if with_dna else set()))
    keys: list[str] = []
    metadata: list[bytes] = []
    targets: list[bytes] = []
    digests: list[bytes] = []
    empty: list[bool] = []
    barcodes: list[bytes] = []
    for sample in read_shard_samples(shard, members):
        keys.append(sample["__key__"])
        metadata.append(sample[METADATA])
        targets.append(sample[TARGETS])
        if with_dna:
            digests.append(hashlib.blake2b(sample[DNA], digest_size=16).digest())
            empty.append(not sample[DNA].strip())
            barcodes.append(sample[DNA])
    columns = {"processid": pa.array(keys, pa.string()), "split": pa.array([shard.split] * len(keys), pa.string())}
    try:
        columns.update(_label_columns(metadata, targets))
    except (pa.ArrowInvalid, ValueError) as error:
        raise CorruptShardError(shard.url, f"unreadable json / targets.json member ({error})") from error
    if with_dna:
        columns[DIGEST] = pa.array(digests, pa.binary(16))
        columns[EMPTY] = pa.array(empty, pa.bool_())
        columns[PAYLOAD] = pa.array(barcodes, pa.binary())
    return pa.table(columns)


def labels_and_payloads(shard: InputShard, with_dna: bool) -> tuple[pa.Table, pa.Table | None]:
    """The embedding job's label task: labels for the driver, and (DNA) the barcodes, left in the object store.

    Here, not in `zoo.embedding.pipeline`, so that its Ray workers import no model families (torch, timm,
    transformers: ~4 s a worker, where this module takes ~0.5 s).
    """
    table = read_label_rows(shard, with_dna=with_dna)
    if not with_dna:
        return table, None
    return table.drop_columns([PAYLOAD]), table.select([PAYLOAD])


#: How a payload read task reads one unit of work: (unit, members) -> its samples in row order.
SampleReader = Callable[[Any, frozenset[str]], Iterable[Mapping[str, Any]]]


def _payload_blocks(shard: InputShard, member: str, rows: np.ndarray, read: SampleReader) -> Iterator[pa.Table]:
    wanted = set(rows.tolist())
    numbers: list[int] = []
    payloads: list[bytes] = []
    size = 0

    def block() -> pa.Table:
        return pa.table(
            {
                "shard": pa.array([shard.number] * len(numbers), pa.int32()),
                "row": pa.array(numbers, pa.int32()),
                "payload": pa.array(payloads, pa.binary()),
            }
        )

    for position, sample in enumerate(read(shard, frozenset({member}))):
        if position in wanted:
            numbers.append(position)
            payloads.append(sample[member])
            size += len(sample[member])
            if len(numbers) == BLOCK_ROWS or size >= BLOCK_BYTES:
                yield block()
                numbers, payloads, size = [], [], 0
    if numbers:
        yield block()


@dataclass(frozen=True)
class PayloadsInObjectStore:
    """`SampleReader` over the barcodes the label pass left in Ray's object store: DNA shards are read once.

    `refs` maps a shard number to the object ref of a table whose `PAYLOAD` column holds every sample's
    member bytes in shard order (already checked against the manifest's count and sha256 by that pass).
    """

    refs: Mapping[int, Any]
    member: str

    def __call__(self, shard: InputShard, members: frozenset[str]) -> Iterator[dict[str, bytes]]:
        column = ray.get(self.refs[shard.number]).column(PAYLOAD)
        return ({self.member: value} for value in column.to_pylist())


class ShardPayloads(Datasource):
    """Ray Data source: one read task per input shard, yielding `{shard, row, payload}` for the rows asked for.

    `read` reads a shard's samples (another job's units too, e.g. the crop job's planned shards of a release).
    """

    def __init__(
        self, work: Sequence[tuple[InputShard, np.ndarray]], member: str, read: SampleReader = read_shard_samples
    ) -> None:
        self._work, self._member, self._read = list(work), member, read

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        tasks = []
        for shard, rows in self._work:
            meta = BlockMetadata(num_rows=len(rows), size_bytes=None, exec_stats=None, input_files=(shard.url,))

            def read(
                shard: InputShard = shard,
                rows: np.ndarray = rows,
                member: str = self._member,
                reader: SampleReader = self._read,
            ) -> Iterator[pa.Table]:
                return _payload_blocks(shard, member, rows, reader)

            tasks.append(ReadTask(read, meta))
        return tasks
