"""zoo: models on top of the stream (BarcodeBERT, image encoders, CLIP, FAISS indices, evaluation)."""
