"""Embeddings at scale: the Ray Data embedding job and the Parquet embedding store it writes and reads.

report = embed_shards(EmbedConfig("OUT/cropped_256", "stores/dna", model="kmer_freq_k5", splits=("train",)))
table = read_embeddings("stores/dna", splits=["train"])   # table.vectors (n, dim), table.columns (labels)
"""

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
