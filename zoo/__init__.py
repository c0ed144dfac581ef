"""zoo: models on top of the stream (BarcodeBERT, image encoders, CLIP, FAISS indices, evaluation)."""

from zoo._factory import create_model as create_model
from zoo._registry import list_models as list_models
from zoo.embedding import embed_shards as embed_shards
from zoo.embedding import read_embeddings as read_embeddings
from zoo.indices import build_index as build_index
from zoo.indices import search as search

__all__ = ["build_index", "create_model", "embed_shards", "list_models", "read_embeddings", "search"]
