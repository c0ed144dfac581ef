"""The encoder contract every embedding model of the zoo meets (stream -> **encoder** -> embedding store).

An encoder is an `nn.Module` built by `zoo.create_model(name)` that also declares:

- `modality`: `"image"`, `"dna"` or `"text"`, and which shard member it reads (`input_member`);
- `embed_dim`: the width of its embeddings;
- `preprocessor()`: a picklable callable, raw member values (JPEG bytes, barcode or taxonomy strings) ->
  fixed-shape numpy arrays. It is the CPU stage of the embedding job (a Ray Data task) and never touches the
  model; a value it cannot use becomes a reject with a reason instead of an exception;
- `embed_batch(arrays)`: those arrays as tensors on the model's device -> float embeddings `(n, embed_dim)`;
- `input_spec()`: JSON describing the transform or tokenizer (written into the store's `index.json`);
- `fingerprint()`: architecture + sha256 of the weights, so a store knows exactly which model made it.

Every preprocessor emits fixed shapes (images at the model's input size, DNA padded to 660 nt, text padded to
its max length), and the embedding job pads every forward batch to one size: then a row's embedding depends
only on its own input, never on its batch neighbours, which is what makes a resumed job byte-identical.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

__all__ = [
    "Encoder",
    "Preprocessed",
    "Preprocessor",
    "WeightsError",
    "is_encoder",
    "module_fingerprint",
    "state_sha256",
]

MODALITIES = ("image", "dna", "text")


class WeightsError(ValueError):
    """Weights that cannot be loaded into the architecture they were given for."""


@dataclass
class Preprocessed:
    """Output of a preprocessor over n raw values: arrays for the usable rows (in input order) and the rest.

    `rejects` maps the input position of each unusable value to its reason (e.g. `undecodable_image`).
    """

    arrays: dict[str, np.ndarray]
    kept: np.ndarray  # int64 positions of the rows in `arrays`
    rejects: dict[int, str] = field(default_factory=dict)


class Preprocessor(Protocol):
    """Raw member values -> `Preprocessed` (picklable; runs in CPU tasks away from the model)."""

    def __call__(self, values: Sequence[Any]) -> Preprocessed: ...


@runtime_checkable
class Encoder(Protocol):
    """What the embedding job, the indices and the evaluations need of a model."""

    modality: str
    input_member: str
    embed_dim: int

    def preprocessor(self) -> Preprocessor: ...

    def embed_batch(self, arrays: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def input_spec(self) -> dict[str, Any]: ...

    def fingerprint(self) -> dict[str, Any]: ...


def is_encoder(model: object) -> bool:
    """Whether `model` meets the encoder contract (all of its attributes and methods)."""
    return isinstance(model, Encoder)


def state_sha256(module: nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes) in name order: the weights' identity."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{data.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def module_fingerprint(name: str, architecture: dict[str, Any], module: nn.Module) -> dict[str, Any]:
    """`{name, architecture, architecture_sha256, weights_sha256}` with the architecture as canonical JSON."""
    canonical = json.dumps(architecture, sort_keys=True, default=str)
    return {
        "name": name,
        "architecture": json.loads(canonical),
        "architecture_sha256": hashlib.sha256(canonical.encode()).hexdigest(),
        "weights_sha256": state_sha256(module),
    }
