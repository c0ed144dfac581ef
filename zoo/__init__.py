"""zoo: models on top of the stream (BarcodeBERT, image encoders, CLIP, FAISS indices, evaluation)."""

from zoo._factory import create_model as create_model
from zoo._registry import list_models as list_models

__all__ = ["create_model", "list_models"]
