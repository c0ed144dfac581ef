"""Pipeline stages of the stream: read pieces of shards, shuffle, decode, batch (shardlists -> **stages** -> loader).

Each stage is a generator over samples in webdataset style: a private `_verb(src, ...)` exported as
`verb = stage(_verb)` so it composes in a `webdataset.DataPipeline` as well as by plain calls. Samples
stay raw bytes (only the requested members, parsed by `tarreader`, ~5x faster than webdataset's tarfile-based
expander) until after the shuffle buffer, so replaying a stream to resume costs tar parsing, not decoding.

Errors: a shard that cannot be opened or parsed, is truncated (fewer samples than its manifest count)
or lacks a requested member raises `CorruptShardError` naming the shard, or is skipped and counted with
`on_corrupt="skip"`. A sample that fails to decode goes to `handler` (default `reraise_named`: raise with
the sample's key and shard).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import webdataset
from webdataset.filters import pipelinefilter as stage
from webdataset.filters import shuffle

from bioscan_stream.stream.decoders import KEY, POSITION, URL, SampleDecoder
from bioscan_stream.stream.shardlists import Piece, register_s3_scheme
from bioscan_stream.stream.tarreader import CorruptShardError, iter_tar_samples

__all__ = [
    "CorruptShardError",
    "SampleDecodeError",
    "ReadStats",
    "reraise_named",
    "read_pieces",
    "shuffle",
    "decode",
    "batched",
]

log = logging.getLogger(__name__)

OnCorrupt = Literal["raise", "skip"]
Handler = Callable[[BaseException], bool]


class SampleDecodeError(ValueError):
    """One sample failed to decode; the message names its key and shard."""


def reraise_named(exn: BaseException) -> bool:
    """Default sample-error handler: re-raise (the error already names the sample and shard)."""
    raise exn


@dataclass
class ReadStats:
    """What a reader skipped (per process): shards skipped with `on_corrupt="skip"`."""

    corrupt_shards: list[str] = field(default_factory=list)


def _piece_samples(piece: Piece, members: frozenset[str]) -> Iterator[dict[str, Any]]:
    """The samples a piece takes, raw; parses (never decodes) the samples it skips."""
    stream = webdataset.gopen(piece.url, "rb")
    read = 0
    try:
        for index, sample in enumerate(iter_tar_samples(stream, piece.url, members or None)):
            read = index + 1
            if piece.takes(index):
                missing = members - sample.keys()
                if missing:
                    raise CorruptShardError(piece.url, f"sample {sample[KEY]!r} lacks {sorted(missing)}")
                yield sample
            if piece.stop is not None and read >= piece.stop:
                break
    finally:
        stream.close()
    need = piece.expected if piece.stop is None else piece.stop  # the planner keeps stop <= expected
    if need is not None and read < need:
        raise CorruptShardError(piece.url, f"truncated: {read} samples read, the manifest promises {need}")


def _read_pieces(
    pieces: Iterable[Piece], *, members: frozenset[str], on_corrupt: OnCorrupt = "raise", stats: ReadStats | None = None
) -> Iterator[dict[str, Any]]:
    """Raw samples (`__key__`, `__url__` and the requested members as bytes) of each piece in order."""
    register_s3_scheme()
    for piece in pieces:
        try:
            yield from _piece_samples(piece, members)
        except Exception as error:
            corrupt = error if isinstance(error, CorruptShardError) else CorruptShardError(piece.url, repr(error))
            if on_corrupt == "raise":
                raise corrupt from error
            log.warning("skipping %s", corrupt)
            if stats is not None:
                stats.corrupt_shards.append(piece.url)


read_pieces = stage(_read_pieces)


def _decode(
    src: Iterable[dict[str, Any]], decoder: SampleDecoder, *, handler: Handler = reraise_named
) -> Iterator[dict[str, Any]]:
    """Per-sample decoding; failures become `SampleDecodeError`s for `handler` (True = drop and go on)."""
    for raw in src:
        try:
            yield decoder.decode(raw)
        except Exception as error:
            named = SampleDecodeError(f"sample {raw.get(KEY)!r} of {raw.get(URL)}: {error!r}")
            named.__cause__ = error
            if not handler(named):
                return


decode = stage(_decode)


def _batched(
    src: Iterable[dict[str, Any]],
    batch_size: int,
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
    *,
    partial: bool = True,
) -> Iterator[dict[str, Any]]:
    """Group decoded samples into `collate`d batches; each batch carries the stream position of its last sample."""
    buffer: list[dict[str, Any]] = []
    for sample in src:
        buffer.append(sample)
        if len(buffer) == batch_size:
            yield _with_position(collate(buffer), buffer)
            buffer = []
    if buffer and partial:
        yield _with_position(collate(buffer), buffer)


def _with_position(batch: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    batch[POSITION] = samples[-1].get(POSITION)
    return batch


batched = stage(_batched)
