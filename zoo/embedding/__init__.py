"""Embeddings at scale: the Ray Data embedding job and the Parquet embedding store it writes and reads.

report = embed_shards(EmbedConfig("OUT/cropped_256", "stores/dna", model="kmer_freq_k5", splits=("train",)))
table = read_embeddings("stores/dna", splits=["train"])   # table.vectors (n, dim), table.columns (labels)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bioscan_stream._lazy import lazy_exports

if TYPE_CHECKING:
    from zoo.embedding.pipeline import EmbedConfig as EmbedConfig
    from zoo.embedding.pipeline import EmbedReport as EmbedReport
    from zoo.embedding.pipeline import EncoderMismatchError as EncoderMismatchError
    from zoo.embedding.pipeline import embed_shards as embed_shards
    from zoo.embedding.store import EmbeddingTable as EmbeddingTable
    from zoo.embedding.store import iter_embeddings as iter_embeddings
    from zoo.embedding.store import read_embeddings as read_embeddings
    from zoo.embedding.store import read_store_index as read_store_index

__all__ = [
    "EmbedConfig",
    "EmbedReport",
    "EmbeddingTable",
    "EncoderMismatchError",
    "embed_shards",
    "iter_embeddings",
    "read_embeddings",
    "read_store_index",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "EmbedConfig": "zoo.embedding.pipeline",
        "EmbedReport": "zoo.embedding.pipeline",
        "EncoderMismatchError": "zoo.embedding.pipeline",
        "embed_shards": "zoo.embedding.pipeline",
        "EmbeddingTable": "zoo.embedding.store",
        "iter_embeddings": "zoo.embedding.store",
        "read_embeddings": "zoo.embedding.store",
        "read_store_index": "zoo.embedding.store",
    },
)
