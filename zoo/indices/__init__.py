"""FAISS indices over an embedding store: build one tuned to a recall target, search it (embeddings -> **indices**).

meta = build_index("stores/dna", "indices/dna")            # factory="auto", recall@10 >= 0.95 vs exact
hits = search("indices/dna", "stores/dna_queries", k=10)    # hits.ids (processids), hits.scores
"""

from zoo.indices.build import IndexConfig as IndexConfig
from zoo.indices.build import IndexMismatchError as IndexMismatchError
from zoo.indices.build import build_index as build_index
from zoo.indices.build import run_build as run_build
from zoo.indices.search import LoadedIndex as LoadedIndex
from zoo.indices.search import SearchResult as SearchResult
from zoo.indices.search import load_index as load_index
from zoo.indices.search import search as search

__all__ = [
    "IndexConfig",
    "IndexMismatchError",
    "LoadedIndex",
    "SearchResult",
    "build_index",
    "load_index",
    "run_build",
    "search",
]
