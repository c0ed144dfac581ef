"""Which shards, in which order, read by whom (shards -> **shardlists** -> stages -> loader).

A shard set URL (a local folder, an `s3://` prefix, one `.tar`, a brace pattern, a `pipe:` command or an
explicit list) becomes a list of `Shard`s, with sample counts when the set's `index.json` manifest gives
them. Each epoch shuffles that list with a generator seeded by `(seed, epoch)` (the same on every node
and worker), then cuts it into one plan of `Piece`s per *stream*, `stream = rank * workers + worker`.

Exactly once per epoch, also when shards don't divide evenly:

- counts known (manifest): the shuffled shards are laid end to end as one sequence of N samples and
  stream s takes samples `[s*N//S, (s+1)*N//S)`. Streams differ by at most one sample (so DDP ranks see
  the same number of batches) and at most two streams share a shard at a boundary, the second skipping
  the first's part by parsing (no decode).
- counts unknown (listing, URL list): whole shards round-robin for the first `S * (n // S)` shards; the
  `n % S` leftover shards are read by every stream, each keeping the samples whose index within the shard
  is `stream (mod S)`.

`resampled_pieces` is the infinite mode for step-based training: each stream draws shards with
replacement from its own generator, so exactly-once does not apply there.

A BIOSCAN-1M shard set is stored by partition group; its manifest's `partitionings` entry names, per
partitioning and split, the groups that make up that split, so `resolve_shards(url, "train",
partitioning="large_insect_order")` lists exactly that split's shards, group by group.
"""

from __future__ import annotations

import io
import json
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import braceexpand
import webdataset

from bioscan_stream.schema import INDEX_FILE
from bioscan_stream.storage import S3Reader, join_url, list_urls, read_bytes, url_exists

__all__ = [
    "Shard",
    "Piece",
    "Partition",
    "expand_urls",
    "resolve_shards",
    "shuffle_shards",
    "split_pieces",
    "resampled_pieces",
    "current_partition",
    "register_s3_scheme",
]

_SHARD_SUFFIX = ".tar"


@dataclass(frozen=True)
class Shard:
    """One tar of a shard set; `samples` is None when no manifest says how many it holds."""

    url: str
    samples: int | None = None


@dataclass(frozen=True)
class Piece:
    """The samples of one shard that one stream reads: indices in `[start, stop)` that are `offset (mod step)`.

    `expected` is the shard's manifest count: reading fewer samples than `min(stop, expected)` means the
    shard is truncated.
    """

    url: str
    start: int = 0
    stop: int | None = None
    step: int = 1
    offset: int = 0
    expected: int | None = None

    def takes(self, index: int) -> bool:
        return index >= self.start and index % self.step == self.offset

    @property
    def size(self) -> int | None:
        """How many samples this piece delivers, when the counts are known."""
        stop = self.stop if self.stop is not None else self.expected
        if stop is None:
            return None
        first = self.start + (self.offset - self.start) % self.step
        return max(0, (stop - first + self.step - 1) // self.step)


@dataclass(frozen=True)
class Partition:
    """Who reads: node `rank` of `world`, DataLoader `worker` of `workers`."""

    rank: int = 0
    world: int = 1
    worker: int = 0
    workers: int = 1

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.world and 0 <= self.worker < self.workers):
            raise ValueError(f"invalid partition {self}")

    @property
    def stream(self) -> int:
        return self.rank * self.workers + self.worker

    @property
    def streams(self) -> int:
        return self.world * self.workers


def expand_urls(urls: str | Sequence[str]) -> list[str]:
    """Brace-expand one pattern or each of a list: `train-{000000..000006}.tar` -> 7 URLs."""
    items = [urls] if isinstance(urls, str) else list(urls)
    return [u for item in items for u in braceexpand.braceexpand(str(item))]


def _manifest_entries(index: dict[str, Any], split: str) -> list[dict[str, Any]] | None:
    """Shard entries of `split`: the converter writes `{"splits": {s: {"shards": [{path, samples, ...}]}}}`;
    `{"shards": {s: [...]}}` and `{"shards": [{"split": s, ...}]}` are accepted too (read defensively)."""
    splits = index.get("splits")
    if isinstance(splits, dict) and split in splits:
        entry = splits[split]
        return list(entry["shards"] if isinstance(entry, dict) else entry)
    shards = index.get("shards")
    if isinstance(shards, dict) and split in shards:
        return list(shards[split])
    if isinstance(shards, list):
        return [s for s in shards if s.get("split") == split]
    return None


def _from_manifest(base: str, split: str) -> list[Shard] | None:
    index_url = join_url(base, INDEX_FILE)
    if not url_exists(index_url):
        return None
    index = json.loads(read_bytes(index_url))
    entries = _manifest_entries(index, split)
    if entries is None:
        known = ", ".join(index.get("splits") or index.get("shards") or []) if isinstance(index, dict) else ""
        raise KeyError(f"{index_url}: no split {split!r} in the manifest; its splits: {known or 'none'}")
    shards = []
    for entry in entries:
        name = str(entry.get("path") or entry.get("name") or entry["url"])
        relative = name if "/" in name else f"{split}/{name}"
        count = entry.get("samples")
        shards.append(Shard(join_url(base, relative), int(count) if count is not None else None))
    return shards


#: Split names accepted for a 1M partitioning, as the official loader accepts them.
_SPLIT_ALIASES_1M = {"val": "validation"}


def _partition_groups(url: str, split: str, partitioning: str) -> list[str]:
    """The groups of a 1M shard set that hold `split` of `partitioning` (from its manifest)."""
    index_url = join_url(url, INDEX_FILE)
    if not url_exists(index_url):
        raise FileNotFoundError(f"{url}: a partitioning needs the shard set's {INDEX_FILE}")
    partitionings = json.loads(read_bytes(index_url)).get("partitionings")
    if not partitionings:
        raise ValueError(f"{index_url}: not a BIOSCAN-1M shard set (no partitionings); drop partitioning=")
    if partitioning not in partitionings:
        raise KeyError(f"{index_url}: unknown partitioning {partitioning!r}; known: {', '.join(partitionings)}")
    splits = partitionings[partitioning]
    name = _SPLIT_ALIASES_1M.get(split, split)
    if name not in splits:
        raise KeyError(
            f"{index_url}: partitioning {partitioning!r} has no split {split!r}; splits: {', '.join(splits)}"
        )
    return list(splits[name])


def resolve_shards(
    url: str | Sequence[str], split: str | None = None, *, partitioning: str | None = None
) -> list[Shard]:
    """The shards of a shard set, in manifest (or sorted listing) order.

    Args:
        url: a shard-set folder or `s3://` prefix (read with `split`, through `index.json` when present);
            or a single `.tar`, a brace pattern, a `pipe:` command, or a list of those (used as given).
        split: the split folder to read from a shard-set folder.
        partitioning: a BIOSCAN-1M shard set's partitioning version (e.g. `large_insect_order`); `split` is then
            one of its splits (`train`, `validation` or `val`, `test`, `no_split`).
    """
    if partitioning is not None:
        if not isinstance(url, str) or split is None:
            raise ValueError("partitioning= needs a shard-set folder URL and a split")
        groups = _partition_groups(url, split, partitioning)
        selected = [shard for group in groups for shard in _from_manifest(url, group) or []]  # a group may be empty
        if not selected:
            raise FileNotFoundError(f"{url}: no shards for split {split!r} of partitioning {partitioning!r}")
        return selected
    if not isinstance(url, str):
        return [Shard(u) for u in expand_urls(url)]
    if url.startswith("pipe:") or "{" in url or url.endswith(_SHARD_SUFFIX):
        return [Shard(u) for u in expand_urls(url)]
    if split is None:
        raise ValueError(f"{url}: a shard-set folder needs a split")
    shards = _from_manifest(url, split)
    if shards is None:
        shards = [Shard(u) for u in list_urls(join_url(url, split), suffix=_SHARD_SUFFIX)]
    if not shards:
        raise FileNotFoundError(
            f"{url}: no shards for split {split!r} (no {INDEX_FILE}, no {split}/*{_SHARD_SUFFIX}): give a shard-set "
            "folder that `bioscan-stream shards` wrote, e.g. OUT/cropped_256 or OUT/dna"
        )
    return shards


def shuffle_shards(shards: Sequence[Shard], *, seed: int, epoch: int) -> list[Shard]:
    """The epoch's shard order: a permutation seeded by `(seed, epoch)`, identical in every process."""
    order = list(shards)
    random.Random(f"shards:{seed}:{epoch}").shuffle(order)
    return order


def _by_counts(shards: Sequence[Shard], stream: int, streams: int) -> list[Piece]:
    counts = [int(s.samples or 0) for s in shards]
    total = sum(counts)
    lo, hi = stream * total // streams, (stream + 1) * total // streams
    pieces, first = [], 0
    for shard, count in zip(shards, counts, strict=True):
        start, stop = max(lo - first, 0), min(hi - first, count)
        if start < stop:
            pieces.append(Piece(shard.url, start=start, stop=stop, expected=count))
        first += count
    return pieces


def _round_robin(shards: Sequence[Shard], stream: int, streams: int) -> list[Piece]:
    whole = len(shards) - len(shards) % streams
    pieces = [Piece(s.url, expected=s.samples) for s in shards[stream:whole:streams]]
    pieces += [Piece(s.url, step=streams, offset=stream, expected=s.samples) for s in shards[whole:]]
    return pieces


def split_pieces(shards: Sequence[Shard], partition: Partition) -> list[Piece]:
    """This stream's share of an (already shuffled) shard list; the shares of all streams are disjoint and
    together cover every sample once (method in the module docstring)."""
    if all(s.samples is not None for s in shards):
        return _by_counts(shards, partition.stream, partition.streams)
    return _round_robin(shards, partition.stream, partition.streams)


def resampled_pieces(shards: Sequence[Shard], *, seed: int, epoch: int, partition: Partition) -> Iterator[Piece]:
    """An endless plan: whole shards drawn with replacement, from a generator per (seed, epoch, stream)."""
    rng = random.Random(f"resample:{seed}:{epoch}:{partition.stream}")
    while True:
        shard = rng.choice(shards)
        yield Piece(shard.url, expected=shard.samples)


def _ray_train_partition() -> tuple[int, int] | None:
    """Rank and world size from a Ray Train worker, without importing Ray where it is not in use."""
    if "ray" not in sys.modules:
        return None
    try:
        from ray import train

        context = train.get_context()
        return int(context.get_world_rank()), int(context.get_world_size())
    except Exception:  # not inside a Ray Train worker
        return None


def current_partition(*, rank: int | None = None, world_size: int | None = None) -> Partition:
    """This process's node rank/world (explicit, else torch.distributed, else Ray Train, else 0/1) and its
    DataLoader worker (from `torch.utils.data.get_worker_info()`)."""
    import torch.distributed as dist
    from torch.utils.data import get_worker_info

    if rank is None or world_size is None:
        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        else:
            rank, world_size = _ray_train_partition() or (0, 1)
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return Partition(rank=rank, world=world_size, worker=worker, workers=workers)


def _gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **_: Any) -> IO[bytes]:
    """webdataset opener for `s3://`: a resumable, retrying reader (see `storage.S3Reader`)."""
    if mode != "rb":
        raise ValueError(f"{url}: the s3 scheme is read-only in the stream (mode {mode!r})")
    return io.BufferedReader(S3Reader(url), buffer_size=max(bufsize, 1 << 20))


def register_s3_scheme() -> None:
    """Let `webdataset.gopen` (and so every webdataset pipeline) open `s3://` URLs; idempotent."""
    webdataset.gopen_schemes["s3"] = _gopen_s3
