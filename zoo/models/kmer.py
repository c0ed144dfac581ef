"""k-mer frequency encoder: L2-normalised counts of overlapping k-mers, the classical DNA baseline.

Every learned DNA result of the project is reported beside this encoder (../shared/reference/evaluation.md):
alignment-free k-mer profiles are a strong baseline for barcode identification. A barcode (cut to 660 nt, as
BarcodeBERT's input) becomes the counts of its overlapping k-mers over `ACGT` (any window containing another
character is skipped), a `4^k` vector, L2-normalised. No weights; the counting is exact integer arithmetic,
so embeddings are identical whatever the batch.

Registered as `kmer_freq_k{K}` (any K in 1..8 by name; `kmer_freq_k5` etc.).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bioscan_stream.constants import DNA_MAX_LEN
from bioscan_stream.schema import DNA
from zoo._registry import register_model, register_model_pattern
from zoo.encoder import Preprocessed, module_fingerprint

__all__ = ["KmerFrequencyEncoder", "KmerCounter", "kmer_codes", "kmer_counts"]

NAME_PATTERN = r"kmer_freq_k(\d+)"
_MAX_K = 8
_DIGIT = np.full(256, 255, dtype=np.uint8)
for _code, _base in enumerate(b"ACGT"):
    _DIGIT[_base] = _code


def _as_text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)


def kmer_codes(seqs: Sequence[Any], k: int, *, max_len: int = DNA_MAX_LEN) -> np.ndarray:
    """Code of every k-mer window of each sequence (cut to `max_len`): `(n, max_len - k + 1)`, `4^k` = no k-mer.

    A window past the end of the sequence or holding a character outside ACGT gets the code `4^k`. Codes are
    what crosses from the CPU stage to the model: 2 bytes per window (k <= 7) instead of a dense `4^k` count
    vector (4 KB per row at k=5), and building them is a few vectorised passes over a fixed-width matrix.
    """
    dim, width = 4**k, max_len - k + 1
    if width < 1:
        raise ValueError(f"max_len {max_len} is shorter than k={k}")
    text = b"".join(_as_text(s)[:max_len].encode("ascii", "replace").ljust(max_len, b"N") for s in seqs)
    digits = _DIGIT[np.frombuffer(text, dtype=np.uint8)].reshape(len(seqs), max_len)
    dtype = np.int16 if dim < np.iinfo(np.int16).max else np.int32
    value = np.zeros((len(seqs), width), dtype)
    invalid = np.zeros((len(seqs), width), bool)
    for i in range(k):
        part = digits[:, i : i + width]
        value = value * 4 + (part & 3)
        invalid |= part == 255
    value[invalid] = dim
    return value


def kmer_counts(seqs: Sequence[Any], k: int, *, max_len: int = DNA_MAX_LEN) -> np.ndarray:
    """Counts `(n, 4^k)` float32 of the overlapping ACGT k-mers of each sequence (cut to `max_len`)."""
    return _counts_of_codes(torch.from_numpy(kmer_codes(seqs, k, max_len=max_len)), 4**k).numpy()


def _counts_of_codes(codes: torch.Tensor, dim: int) -> torch.Tensor:
    """`(n, dim)` float32 counts of k-mer codes; code `dim` (no k-mer) lands in a dropped extra bin."""
    counts = torch.zeros(codes.shape[0], dim + 1)
    counts.scatter_add_(1, codes.long(), torch.ones(codes.shape))
    return counts[:, :dim]


@dataclass(frozen=True)
class KmerCounter:
    """Preprocessor: barcodes -> k-mer codes; an empty barcode or one without any ACGT k-mer is a reject."""

    k: int
    max_len: int = DNA_MAX_LEN

    def __call__(self, values: Sequence[Any]) -> Preprocessed:
        codes = kmer_codes(values, self.k, max_len=self.max_len)
        present = (codes != 4**self.k).any(axis=1)
        rejects = {
            i: ("empty_barcode" if not _as_text(values[i]).strip() else "no_valid_kmer")
            for i in np.flatnonzero(~present).tolist()
        }
        kept = np.flatnonzero(present)
        return Preprocessed({"kmers": codes[kept]}, kept.astype(np.int64), rejects)


class KmerFrequencyEncoder(nn.Module):
    """DNA encoder without weights: `counts -> counts / ||counts||`."""

    modality = "dna"
    input_member = DNA

    def __init__(self, k: int = 5, max_len: int = DNA_MAX_LEN) -> None:
        super().__init__()
        if not 1 <= k <= _MAX_K:
            raise ValueError(f"k must be in 1..{_MAX_K}, got {k}")
        self.k, self.max_len = k, max_len
        self.embed_dim = 4**k

    def preprocessor(self) -> KmerCounter:
        return KmerCounter(self.k, self.max_len)

    def embed_batch(self, arrays: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.normalize(_counts_of_codes(arrays["kmers"], self.embed_dim), dim=1)

    def forward(self, kmers: torch.Tensor) -> torch.Tensor:
        return self.embed_batch({"kmers": kmers})

    def input_spec(self) -> dict[str, Any]:
        return {"tokenizer": "overlapping_kmer_counts", "k": self.k, "max_len": self.max_len, "alphabet": "ACGT"}

    def fingerprint(self) -> dict[str, Any]:
        return module_fingerprint(f"kmer_freq_k{self.k}", {"family": "kmer_freq", **self.input_spec()}, self)


def _create_kmer(k: int, pretrained: str | Path | None = None, **overrides: Any) -> KmerFrequencyEncoder:
    if pretrained is not None:
        raise ValueError("the k-mer frequency encoder has no weights: pretrained must be None")
    return KmerFrequencyEncoder(k=k, **overrides)


@register_model
def kmer_freq_k4(pretrained: str | Path | None = None, **overrides: Any) -> KmerFrequencyEncoder:
    """Overlapping 4-mer frequencies (256-d)."""
    return _create_kmer(4, pretrained, **overrides)


@register_model
def kmer_freq_k5(pretrained: str | Path | None = None, **overrides: Any) -> KmerFrequencyEncoder:
    """Overlapping 5-mer frequencies (1024-d)."""
    return _create_kmer(5, pretrained, **overrides)


@register_model
def kmer_freq_k6(pretrained: str | Path | None = None, **overrides: Any) -> KmerFrequencyEncoder:
    """Overlapping 6-mer frequencies (4096-d)."""
    return _create_kmer(6, pretrained, **overrides)


@register_model_pattern(NAME_PATTERN)
def kmer_freq_any(name: str, pretrained: str | Path | None = None, **overrides: Any) -> KmerFrequencyEncoder:
    """Any `kmer_freq_k{K}`."""
    return _create_kmer(int(name.removeprefix("kmer_freq_k")), pretrained, **overrides)
