"""The k-mer frequency encoder counts exactly what a plain Python counter counts, whatever the batch."""

from __future__ import annotations

from collections import Counter
from itertools import product

import numpy as np
import pytest
import torch

from zoo.models.kmer import KmerCounter, KmerFrequencyEncoder, kmer_codes, kmer_counts


def _reference_counts(seq: str, k: int, max_len: int) -> np.ndarray:
    """Counts of the ACGT k-mers of `seq[:max_len]`, by enumerating every window."""
    index = {"".join(p): i for i, p in enumerate(product("ACGT", repeat=k))}
    seen = Counter(seq[:max_len][i : i + k] for i in range(len(seq[:max_len]) - k + 1))
    out = np.zeros(4**k, np.float32)
    for kmer, n in seen.items():
        if kmer in index:
            out[index[kmer]] = n
    return out


def _random_barcodes(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    seqs = ["".join(rng.choice(list("ACGTN-"), p=[0.24, 0.24, 0.24, 0.24, 0.02, 0.02], size=int(rng.integers(0, 900))))
            for _ in range(n)]  # fmt: skip
    return [*seqs, "", "ACG", "ACGTacgtACGTTT", "é" * 40 + "ACGTACGT", "N" * 700]


@pytest.mark.parametrize("k", [1, 3, 5, 8])
def test_counts_equal_a_plain_counter(k: int) -> None:
    seqs = _random_barcodes(40, seed=k)
    expected = np.stack([_reference_counts(s, k, 660) for s in seqs])
    np.testing.assert_array_equal(kmer_counts(seqs, k), expected)


def test_codes_are_compact_and_mark_windows_without_a_kmer() -> None:
    codes = kmer_codes(["ACGTA", "ACNTA"], 2, max_len=6)
    assert codes.dtype == np.int16 and codes.shape == (2, 5)
    # AC=1, CG=6, GT=11, TA=12; windows with N or past the end are 16 (= 4^2, no k-mer)
    assert codes.tolist() == [[1, 6, 11, 12, 16], [1, 16, 16, 12, 16]]
    assert kmer_codes(["A" * 20], 8).dtype == np.int32  # 4^8 codes do not fit int16


def test_rejects_name_empty_and_kmer_less_barcodes() -> None:
    done = KmerCounter(5)([b"ACGTACGT", b"", b"  ", b"ACG", b"NNNNNNNN"])
    assert done.kept.tolist() == [0]
    assert done.rejects == {1: "empty_barcode", 2: "empty_barcode", 3: "no_valid_kmer", 4: "no_valid_kmer"}


def test_embeddings_are_unit_length_and_independent_of_the_batch() -> None:
    model = KmerFrequencyEncoder(5)
    seqs = [s.encode() for s in _random_barcodes(30, seed=0)]
    done = model.preprocessor()(seqs)
    kmers = torch.from_numpy(done.arrays["kmers"])
    whole = model.embed_batch({"kmers": kmers})
    one_by_one = torch.cat([model.embed_batch({"kmers": kmers[i : i + 1]}) for i in range(len(kmers))])
    assert torch.equal(whole, one_by_one)
    np.testing.assert_allclose(whole.norm(dim=1).numpy(), 1.0, rtol=1e-6)
    counts = kmer_counts([seqs[i].decode() for i in done.kept], 5)
    np.testing.assert_allclose(whole.numpy(), counts / np.linalg.norm(counts, axis=1, keepdims=True), rtol=1e-6)
