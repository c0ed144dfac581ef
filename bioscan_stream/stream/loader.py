"""`BioscanStream`: the torch IterableDataset over a shard set, and `make_loader` (stages -> **loader** -> zoo).

    ds = BioscanStream("s3://bucket/bioscan5m/cropped_256", split="train", batch_size=64, seed=0)
    loader = make_loader(ds, num_workers=8)
    for epoch in range(10): loader.set_epoch(epoch); [step(b["image"], b["dna"], b["species"]) for b in loader]

Per epoch and stream (`rank * workers + worker`) the dataset plans its pieces of shards
(`shardlists`), reads only the requested members, shuffles raw samples through a buffer seeded by
`(seed, epoch, stream)`, decodes in the worker and collates whole batches (tokenisation, stacking and
normalisation once per batch).

Resume: every batch carries `__stream__` and `__position__` (samples of its stream consumed so far this
epoch). `state_dict()` is `{epoch, streams, position: {stream: n}}`; after `load_state_dict` each stream
replays its deterministic order up to `n` *without decoding* (tar parsing only) and continues, so nothing
is replayed or skipped. `BioscanLoader` tracks positions of the batches actually handed to the caller;
torchdata's `StatefulDataLoader` works too (each worker's dataset reports its own position). Resume
needs the same seed, shard set and number of streams; the image augmentations' random draws are not
replayed (DNA offsets are: they hash the sample key).

`__iter__` advances the epoch by itself, so persistent workers stay in step with `set_epoch(e + 1)`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import islice
from typing import Any

from torch.utils.data import DataLoader, IterableDataset

from bioscan_stream.dna import KmerTokenizer
from bioscan_stream.stream.decoders import POSITION, ImageFn, SampleDecoder
from bioscan_stream.stream.shardlists import (
    Partition,
    Piece,
    current_partition,
    resampled_pieces,
    resolve_shards,
    shuffle_shards,
    split_pieces,
)
from bioscan_stream.stream.stages import (
    Handler,
    OnCorrupt,
    ReadStats,
    batched,
    decode,
    read_pieces,
    reraise_named,
    shuffle,
)
from bioscan_stream.stream.transforms import create_transform

__all__ = ["StreamOptions", "BioscanStream", "BioscanLoader", "make_loader", "create_decoder", "TRAIN_SPLITS"]

#: Splits that get training augmentations by default.
TRAIN_SPLITS = ("train", "pretrain", "pretrain_dna")
STREAM, CORRUPT = "__stream__", "__corrupt__"


@dataclass(frozen=True)
class StreamOptions:
    """Options of `BioscanStream` (each can also be passed to it as a keyword).

    Args:
        batch_size: yield collated batches of this size (None: single samples).
        shuffle_buffer: samples in the shuffle buffer (0/1: the planned order).
        seed: seeds shard order, buffer shuffle and DNA offsets together with the epoch.
        resampled: endless stream of shards drawn with replacement (step-based training).
        shard_shuffle: shuffle the shard order each epoch.
        transform: "auto" (train augmentations on training splits), "train", "eval", or a callable
            JPEG bytes -> tensor (uint8 tensors are normalised per batch).
        image_size: output side of the built-in transforms.
        normalize: uint8 image batches -> float with the BIOSCAN mean/std in the worker. False sends uint8
            (4x fewer bytes); normalise on the GPU: `normalize_batch(images.to(device, non_blocking=True))`.
        tokenizer: DNA tokenizer; None yields barcode strings.
        dna_max_offset: DNA offset augmentation range; None: k-1 on training splits, else 0.
        drop_last: drop a stream's last partial batch (breaks exactly-once; off by default).
        rank, world_size: node split; None: torch.distributed, then Ray Train, else 0/1.
        on_corrupt: "raise" (error naming the shard) or "skip" (log, count in `__corrupt__`).
        handler: sample decode errors; True from it drops the sample.
    """

    batch_size: int | None = None
    shuffle_buffer: int = 1000
    seed: int = 0
    resampled: bool = False
    shard_shuffle: bool = True
    transform: str | ImageFn = "auto"
    image_size: int = 224
    normalize: bool = True
    tokenizer: KmerTokenizer | None = field(default_factory=KmerTokenizer)
    dna_max_offset: int | None = None
    drop_last: bool = False
    rank: int | None = None
    world_size: int | None = None
    on_corrupt: OnCorrupt = "raise"
    handler: Handler = reraise_named


def _image_transform(option: str | ImageFn, *, train: bool, size: int) -> ImageFn:
    if callable(option):
        return option
    if option not in ("auto", "train", "eval"):
        raise ValueError(f"transform must be 'auto', 'train', 'eval' or a callable, not {option!r}")
    return create_transform(train=train if option == "auto" else option == "train", size=size)


def create_decoder(
    split: str, modalities: Sequence[str], targets: Sequence[str], options: StreamOptions
) -> SampleDecoder:
    """The sample decoder for a split: training augmentations (image and DNA offsets) on `TRAIN_SPLITS`."""
    train = split in TRAIN_SPLITS
    transform = (
        _image_transform(options.transform, train=train, size=options.image_size) if "image" in modalities else None
    )
    offset = options.dna_max_offset
    if offset is None:
        offset = options.tokenizer.k - 1 if (train and options.tokenizer is not None) else 0
    return SampleDecoder(tuple(modalities), tuple(targets), transform, options.tokenizer, offset, options.normalize)


class BioscanStream(IterableDataset):  # type: ignore[type-arg]
    """WebDataset stream of one split of a shard set, exactly once per epoch across ranks and workers.

    Args:
        url: shard-set folder or `s3://` prefix (with `index.json` or split folders), a `.tar`, brace
            pattern, `pipe:` command, or a list of URLs.
        split: split to read (also picks train/eval defaults).
        partitioning: a BIOSCAN-1M shard set's partitioning version (`large_insect_order`, ...); `split` is one
            of its splits and the official loader's label indices are the targets.
        modalities: members to decode: `image`, `dna`, `metadata`, `count`.
        targets: label columns returned as int64 tensors.
        options: a `StreamOptions`; keywords override its fields.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        split: str = "train",
        modalities: Sequence[str] = ("image", "dna"),
        targets: Sequence[str] = ("species",),
        *,
        partitioning: str | None = None,
        options: StreamOptions | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        self.options = replace(options or StreamOptions(), **overrides)
        self.url, self.split, self.partitioning = url, split, partitioning
        self.shards = resolve_shards(url, split, partitioning=partitioning)
        self.decoder = create_decoder(split, modalities, targets, self.options)
        self.epoch = 0
        self.stats = ReadStats()
        self._resume: dict[str, Any] | None = None
        self._state: dict[str, Any] | None = None

    @property
    def num_samples(self) -> int | None:
        """Samples per epoch over all ranks and workers, from the manifest (None without counts or when resampled).

        Not `__len__`: DataLoader would report it as the number of batches.
        """
        if self.options.resampled or any(s.samples is None for s in self.shards):
            return None
        return sum(int(s.samples or 0) for s in self.shards)

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the next iteration (seeds shard order and shuffles)."""
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        """Where this process's stream is: `{epoch, streams, position: {stream: samples consumed}}`."""
        if self._state is None:
            return {"epoch": self.epoch, "streams": None, "position": {}}
        state = self._state
        return {"epoch": state["epoch"], "streams": state["streams"], "position": {state["stream"]: state["position"]}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at `state` on the next iteration (positions of other streams are ignored by this one)."""
        self.epoch = int(state["epoch"])
        self._resume = {**state, "position": {int(k): int(v) for k, v in state.get("position", {}).items()}}

    def plan(self, epoch: int, partition: Partition) -> Iterator[Piece]:
        """This stream's pieces of shards for `epoch` (endless when resampled)."""
        o = self.options
        if o.resampled:
            return resampled_pieces(self.shards, seed=o.seed, epoch=epoch, partition=partition)
        shards = shuffle_shards(self.shards, seed=o.seed, epoch=epoch) if o.shard_shuffle else self.shards
        return iter(split_pieces(shards, partition))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        partition = current_partition(rank=self.options.rank, world_size=self.options.world_size)
        skip = self._take_resume(epoch, partition)
        self._state = {"epoch": epoch, "stream": partition.stream, "streams": partition.streams, "position": skip}
        return self._generate(epoch, partition, skip)

    def _take_resume(self, epoch: int, partition: Partition) -> int:
        resume, self._resume = self._resume, None
        if resume is None or int(resume["epoch"]) != epoch:
            return 0
        if resume.get("streams") not in (None, partition.streams):
            raise ValueError(f"state saved with {resume['streams']} streams cannot resume {partition.streams} streams")
        return int(resume["position"].get(partition.stream, 0))

    def _generate(self, epoch: int, partition: Partition, skip: int) -> Iterator[dict[str, Any]]:
        o, stream = self.options, partition.stream
        src: Iterator[dict[str, Any]] = read_pieces(
            members=self.decoder.members, on_corrupt=o.on_corrupt, stats=self.stats
        )(self.plan(epoch, partition))
        if o.shuffle_buffer > 1:
            rng = random.Random(f"samples:{o.seed}:{epoch}:{stream}")
            src = shuffle(o.shuffle_buffer, initial=min(100, o.shuffle_buffer), rng=rng)(src)
        src = decode(self.decoder, handler=o.handler)(_number(src, skip))
        salt = f"{o.seed}:{epoch}"
        if o.batch_size:
            collate = partial(self.decoder.collate, salt=salt)
            src = batched(o.batch_size, collate, partial=not o.drop_last)(src)
        else:
            src = map(partial(self.decoder.finish, salt=salt), src)
        for item in src:
            item[STREAM], item[CORRUPT] = stream, len(self.stats.corrupt_shards)
            assert self._state is not None
            self._state["position"] = item[POSITION]
            yield item


def _number(src: Iterator[dict[str, Any]], skip: int) -> Iterator[dict[str, Any]]:
    """Drop the first `skip` raw samples (a resumed stream) and number the rest by stream position."""
    for position, raw in enumerate(islice(src, skip, None), start=skip + 1):
        raw[POSITION] = position
        yield raw


class BioscanLoader(DataLoader):  # type: ignore[type-arg]
    """A DataLoader over a `BioscanStream` that knows where the caller is: `state_dict()` / `load_state_dict()`
    record the position of every stream of this rank from the batches actually delivered."""

    dataset: BioscanStream

    def __init__(self, dataset: BioscanStream, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=None, **kwargs)
        self._epoch: int | None = None
        self._positions: dict[int, int] = {}
        self._streams: int | None = None
        self._done = False
        self._workers_epoch: int | None = None
        self.corrupt_shards: dict[int, int] = {}

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        epoch, resume = self.dataset.epoch, self.dataset._resume
        stale = self._workers_epoch != epoch or resume is not None
        if self._iterator is not None and stale and hasattr(self._iterator, "_shutdown_workers"):
            self._iterator._shutdown_workers()  # persistent workers hold the old epoch/state: restart them
            self._iterator = None
        iterator = super().__iter__()
        self.dataset.epoch, self.dataset._resume = epoch + 1, None
        self._workers_epoch = epoch + 1 if self.persistent_workers else None
        own = resume is not None and int(resume["epoch"]) == epoch
        self._epoch, self._done = epoch, False
        self._positions = dict(resume["position"]) if own and resume is not None else {}
        return self._track(iterator)

    def _track(self, iterator: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for batch in iterator:
            self._positions[int(batch[STREAM])] = int(batch[POSITION])
            self.corrupt_shards[int(batch[STREAM])] = int(batch[CORRUPT])
            yield batch
        self._done = True

    def state_dict(self) -> dict[str, Any]:
        """`{epoch, streams, position}` of the batches handed out so far (a finished epoch points at the next)."""
        if self._epoch is None:
            return self.dataset.state_dict()
        if self._done:
            return {"epoch": self._epoch + 1, "streams": None, "position": {}}
        options = self.dataset.options
        world = current_partition(rank=options.rank, world_size=options.world_size).world
        streams = world * max(self.num_workers, 1)
        return {"epoch": self._epoch, "streams": streams, "position": dict(self._positions)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)


def make_loader(
    dataset: BioscanStream,
    *,
    num_workers: int = 2,
    pin_memory: bool = False,
    persistent_workers: bool = True,
    prefetch_factor: int = 4,
    stateful: bool = False,
) -> DataLoader:  # type: ignore[type-arg]
    """A DataLoader over a batched `BioscanStream`: decoding in `num_workers` processes.

    `stateful=True` returns torchdata's `StatefulDataLoader` (if installed) instead of `BioscanLoader`.
    """
    if not dataset.options.batch_size:
        raise ValueError("make_loader needs a batched stream: pass batch_size= to BioscanStream")
    kwargs: dict[str, Any] = {"num_workers": num_workers, "pin_memory": pin_memory}
    if num_workers > 0:
        kwargs.update(persistent_workers=persistent_workers, prefetch_factor=prefetch_factor)
    if stateful:
        from torchdata.stateful_dataloader import StatefulDataLoader

        return StatefulDataLoader(dataset, batch_size=None, **kwargs)
    return BioscanLoader(dataset, **kwargs)
