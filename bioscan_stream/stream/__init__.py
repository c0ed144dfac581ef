"""The read side (shards -> **stream** -> zoo): WebDataset loaders over shard sets and the official tree.

ds = BioscanStream("s3://bucket/bioscan5m/cropped_256", split="train", batch_size=64)
loader = make_loader(ds, num_workers=8)

Exports load on first use: a Ray task that only parses tars (`bioscan_stream.stream.tarreader`) must not pay
the loader's torch import (2.5 s per worker process, measured 2026-12).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bioscan_stream._lazy import lazy_exports

if TYPE_CHECKING:
    from bioscan_stream.stream.loader import BioscanLoader as BioscanLoader
    from bioscan_stream.stream.loader import BioscanStream as BioscanStream
    from bioscan_stream.stream.loader import StreamOptions as StreamOptions
    from bioscan_stream.stream.loader import make_loader as make_loader
    from bioscan_stream.stream.tarreader import CorruptShardError as CorruptShardError
    from bioscan_stream.stream.transforms import create_transform as create_transform

__all__ = ["BioscanStream", "BioscanLoader", "StreamOptions", "make_loader", "CorruptShardError", "create_transform"]

__getattr__ = lazy_exports(
    __name__,
    {
        "BioscanStream": "bioscan_stream.stream.loader",
        "BioscanLoader": "bioscan_stream.stream.loader",
        "StreamOptions": "bioscan_stream.stream.loader",
        "make_loader": "bioscan_stream.stream.loader",
        "CorruptShardError": "bioscan_stream.stream.tarreader",
        "create_transform": "bioscan_stream.stream.transforms",
    },
)
