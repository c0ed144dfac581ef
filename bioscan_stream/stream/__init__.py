"""The read side (shards -> **stream** -> zoo): WebDataset loaders over shard sets and the official tree.

ds = BioscanStream("s3://bucket/bioscan5m/cropped_256", split="train", batch_size=64)
loader = make_loader(ds, num_workers=8)
"""

from __future__ import annotations

from bioscan_stream.stream.loader import BioscanLoader as BioscanLoader
from bioscan_stream.stream.loader import BioscanStream as BioscanStream
from bioscan_stream.stream.loader import StreamOptions as StreamOptions
from bioscan_stream.stream.loader import make_loader as make_loader
from bioscan_stream.stream.stages import CorruptShardError as CorruptShardError
from bioscan_stream.stream.transforms import create_transform as create_transform

__all__ = ["BioscanStream", "BioscanLoader", "StreamOptions", "make_loader", "CorruptShardError", "create_transform"]
