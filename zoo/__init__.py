"""zoo: models on top of the stream (BarcodeBERT, image encoders, CLIP, FAISS indices, evaluation).

Exports load on first use (`bioscan_stream._lazy`), so a light submodule (`zoo.evaluation.clustering`) imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bioscan_stream._lazy import lazy_exports

if TYPE_CHECKING:
    from zoo._factory import create_model as create_model
    from zoo._registry import list_models as list_models
    from zoo.detectors import create_detector as create_detector
    from zoo.detectors import list_detectors as list_detectors
    from zoo.embedding import embed_shards as embed_shards
    from zoo.embedding import read_embeddings as read_embeddings
    from zoo.indices import build_index as build_index
    from zoo.indices import search as search

__all__ = [
    "build_index",
    "create_detector",
    "create_model",
    "embed_shards",
    "list_detectors",
    "list_models",
    "read_embeddings",
    "search",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "create_model": "zoo._factory",
        "list_models": "zoo._factory",
        "embed_shards": "zoo.embedding.pipeline",
        "read_embeddings": "zoo.embedding.store",
        "build_index": "zoo.indices",
        "search": "zoo.indices",
        "create_detector": "zoo.detectors",
        "list_detectors": "zoo.detectors",
    },
)
