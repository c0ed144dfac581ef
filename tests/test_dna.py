"""Tests of bioscan_stream.dna: the k-mer tokenizer against the published rules, id for id."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest

from bioscan_stream.dna import MASK_ID, UNK_ID, KmerTokenizer, strip_trailing_n

CODE = {"A": 0, "C": 1, "G": 2, "T": 3}


def reference_encode(seq: str, k: int, max_len: int = 660, offset: int = 0) -> tuple[list[int], list[int]]:
    """Independent oracle written from the spec's formula, one character at a time."""
    x = seq[offset:]
    n_tokens = max_len // k
    if len(x) > max_len:
        x, n_real = x[:max_len], n_tokens
    else:
        n_real = len(x) // k
        x = x + "N" * (max_len - len(x))
    ids = []
    for t in range(n_tokens):
        kmer = x[t * k : (t + 1) * k]
        if all(c in CODE for c in kmer):
            ids.append(2 + sum(4 ** (k - 1 - i) * CODE[c] for i, c in enumerate(kmer)))
        else:
            ids.append(UNK_ID)
    return ids, [1] * n_real + [0] * (n_tokens - n_real)


def test_worked_example() -> None:
    ids, mask = KmerTokenizer(k=4).encode("ACGTNACGTTGCA")
    assert ids.dtype == np.int64 and mask.dtype == np.int8
    assert ids.tolist() == [29, 1, 251] + [1] * 162
    assert mask.tolist() == [1, 1, 1] + [0] * 162


@pytest.mark.parametrize(("kmer", "expected"), [("AAAA", 2), ("ACGT", 29), ("TTGC", 251), ("TTTT", 257)])
def test_kmer_ids(kmer: str, expected: int) -> None:
    tok = KmerTokenizer(k=4)
    assert tok.encode(kmer)[0][0] == expected
    assert tok.id_to_kmer(expected) == kmer


@pytest.mark.parametrize(("k", "size", "n_tokens"), [(4, 258, 165), (5, 1026, 132), (6, 4098, 110), (8, 65538, 82)])
def test_vocab_size_and_shape(k: int, size: int, n_tokens: int) -> None:
    tok = KmerTokenizer(k=k)
    assert tok.vocab_size == size == len(tok.vocabulary())
    ids, mask = tok.encode_batch(["ACGT" * 200, ""])
    assert ids.shape == mask.shape == (2, n_tokens)
    assert ids.max() < size


def test_vocabulary_is_lexicographic() -> None:
    vocab = KmerTokenizer(k=3).vocabulary()
    kmers = [s for s in vocab if not s.startswith("[")]
    assert kmers == sorted(kmers) and [vocab[s] for s in kmers] == list(range(2, 66))
    assert vocab["[MASK]"] == MASK_ID and vocab["[UNK]"] == UNK_ID


def test_empty_and_shorter_than_k() -> None:
    tok = KmerTokenizer(k=4)
    for seq in ("", "ACG"):
        ids, mask = tok.encode(seq)
        assert (ids == UNK_ID).all() and (mask == 0).all()
    ids, mask = tok.encode("ACGTA")
    assert ids[0] == 29 and ids[1] == UNK_ID and mask[:2].tolist() == [1, 0]


@pytest.mark.parametrize("seq", ["acgt", "ACGR", "NACG", "AC-T", "ACGU", "ACGé", "YYYY"])
def test_non_acgt_is_unk_and_attended(seq: str) -> None:
    ids, mask = KmerTokenizer(k=4).encode(seq + "ACGT")
    assert ids[:2].tolist() == [UNK_ID, 29]
    assert mask[:2].tolist() == [1, 1]


def test_longer_than_max_len_is_cut_with_full_mask() -> None:
    seq = "ACGT" * 165 + "TTTTTTTT"
    ids, mask = KmerTokenizer(k=4).encode(seq)
    assert (ids == 29).all() and (mask == 1).all()
    ids8, mask8 = KmerTokenizer(k=8).encode(seq)  # 660 // 8 = 82 tokens, the last 4 nucleotides are dropped
    assert ids8.shape == (82,) and (mask8 == 1).all()


def test_offset_drops_leading_nucleotides() -> None:
    tok = KmerTokenizer(k=4)
    ids, mask = tok.encode("GACGTTTTT", offset=1)
    assert ids[:2].tolist() == [29, 257] and mask[:3].tolist() == [1, 1, 0]
    ids_far, mask_far = tok.encode("ACGT", offset=10)
    assert (ids_far == UNK_ID).all() and (mask_far == 0).all()
    with pytest.raises(ValueError):
        tok.encode("ACGT", offset=-1)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        KmerTokenizer(k=0)
    with pytest.raises(ValueError):
        KmerTokenizer(k=8, max_len=4)
    with pytest.raises(TypeError):
        KmerTokenizer().encode_batch("ACGT")
    with pytest.raises(ValueError):
        KmerTokenizer().encode_batch(["ACGT"], offsets=[0, 1])


def _random_barcode(rng: random.Random) -> str:
    length = rng.choice([0, 1, 3, 7, 100, 658, 659, 660, 661, 700])
    return "".join(rng.choice("ACGTACGTACGTNacgRY-") for _ in range(length))


@pytest.mark.parametrize("k", [1, 3, 4, 5, 6, 7, 8, 9])
def test_batch_matches_reference_and_single(k: int) -> None:
    rng = random.Random(k)
    seqs = [_random_barcode(rng) for _ in range(40)]
    offsets = [rng.randrange(k) for _ in seqs]
    tok = KmerTokenizer(k=k)
    ids, mask = tok.encode_batch(seqs, offsets=offsets)
    for row, (seq, offset) in enumerate(zip(seqs, offsets, strict=True)):
        ref_ids, ref_mask = reference_encode(seq, k, offset=offset)
        assert ids[row].tolist() == ref_ids and mask[row].tolist() == ref_mask
        single_ids, single_mask = tok.encode(seq, offset=offset)
        assert (single_ids == ids[row]).all() and (single_mask == mask[row]).all()


@pytest.mark.parametrize("k", [2, 10, 12, 13, 15])
def test_pure_acgt_matches_reference_for_long_kmers(k: int) -> None:
    """Every digit group of the kernel (four at a time, then the rest) is exercised by valid k-mers."""
    rng = random.Random(100 + k)
    seqs = ["".join(rng.choice("ACGT") for _ in range(rng.randrange(600, 700))) for _ in range(20)]
    offsets = [rng.randrange(k) for _ in seqs]
    ids, mask = KmerTokenizer(k=k).encode_batch(seqs, offsets=offsets)
    for row, (seq, offset) in enumerate(zip(seqs, offsets, strict=True)):
        assert (ids[row].tolist(), mask[row].tolist()) == reference_encode(seq, k, offset=offset)
    assert ids.max() >= 4 ** (k - 1)  # high digits really reach the ids


def test_other_max_len() -> None:
    tok = KmerTokenizer(k=4, max_len=10)
    ids, mask = tok.encode("ACGTACGTAC")
    assert ids.tolist() == [29, 29] and mask.tolist() == [1, 1]


def test_strip_trailing_n() -> None:
    assert strip_trailing_n("NNACGTNNACNNN") == "NNACGTNNAC"
    assert strip_trailing_n("NNNN") == ""


def test_decode_roundtrip() -> None:
    tok = KmerTokenizer(k=5)
    ids, _ = tok.encode("ACGTTNNNNNGGGCA")
    assert tok.decode(ids[:3]) == ["ACGTT", "[UNK]", "GGGCA"]
    assert tok.id_to_kmer(MASK_ID) == "[MASK]"
    with pytest.raises(ValueError):
        tok.id_to_kmer(tok.vocab_size)


def test_real_barcodes(shared_fixtures: Path) -> None:
    path = next((shared_fixtures / "real_dna").glob("*.tsv"))
    with path.open(newline="") as f:
        seqs = [row["nucleotides"] for row in csv.DictReader(f, delimiter="\t")][:300]
    for k in (4, 8):
        ids, mask = KmerTokenizer(k=k).encode_batch(seqs)
        for row, seq in enumerate(seqs):
            ref_ids, ref_mask = reference_encode(seq, k)
            assert ids[row].tolist() == ref_ids and mask[row].tolist() == ref_mask
        assert 0.9 < (ids[mask == 1] >= 2).mean() <= 1.0  # real barcodes are mostly clean ACGT
