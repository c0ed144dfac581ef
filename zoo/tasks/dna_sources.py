"""Where pretraining barcodes come from: in-memory lists or the DNA-only shard set through the stream.

Sits between `bioscan_stream.stream` (read side of the shards) and `zoo.tasks.pretrain_loop`. A source
gives each worker its share of one epoch as plain strings, in an order that depends only on
(seed, epoch, rank, world size), which is what makes a killed run resumable at the same sample.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bioscan_stream.schema import DNA_SPLIT
from bioscan_stream.stream import BioscanStream
from bioscan_stream.stream.shardlists import resolve_shards

__all__ = ["ListSource", "SequenceSource", "StreamSource"]


class SequenceSource(Protocol):
    """Barcode strings for pretraining, partitioned over workers."""

    def num_sequences(self) -> int: ...

    def iter_worker(self, *, epoch: int, rank: int, world_size: int) -> Iterator[str]: ...


@dataclass(frozen=True)
class ListSource:
    """In-memory sequences, reshuffled every epoch with a seed, dealt round-robin to workers."""

    sequences: Sequence[str]
    seed: int = 0

    def num_sequences(self) -> int:
        return len(self.sequences)

    def iter_worker(self, *, epoch: int, rank: int, world_size: int) -> Iterator[str]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.sequences))
        return (self.sequences[i] for i in order[rank::world_size])


@dataclass(frozen=True)
class StreamSource:
    """The DNA-only shards (`OUT/dna`, split `pretrain_dna`) read with `BioscanStream`, strings only.

    Tokenisation and offsets stay in the MLM task, so the stream yields raw barcodes (`tokenizer=None`).
    """

    url: str
    split: str = DNA_SPLIT
    seed: int = 0
    shuffle_buffer: int = 1000

    def __post_init__(self) -> None:
        resolve_shards(self.url, self.split)  # a wrong folder fails where the source is made, not in a Ray worker

    def _stream(self, rank: int, world_size: int) -> BioscanStream:
        return BioscanStream(
            self.url,
            split=self.split,
            modalities=("dna",),
            targets=(),
            tokenizer=None,
            seed=self.seed,
            shuffle_buffer=self.shuffle_buffer,
            rank=rank,
            world_size=world_size,
            batch_size=None,
        )

    def num_sequences(self) -> int:
        count = self._stream(0, 1).num_samples
        if count is None:
            raise ValueError(f"{self.url}: the manifest has no sample counts; an epoch's length is unknown")
        return count

    def iter_worker(self, *, epoch: int, rank: int, world_size: int) -> Iterator[str]:
        stream = self._stream(rank, world_size)
        stream.set_epoch(epoch)
        return (sample["dna"] for sample in stream)
