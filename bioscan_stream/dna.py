"""BarcodeBERT's non-overlapping k-mer tokenizer, id for id, vectorised over batches.

Sits between the stream (which yields barcode strings) and the DNA models in `zoo`: a batch of strings
becomes `(ids, mask)` numpy arrays that go straight to torch. The rules are those of the public BarcodeBERT
code used for BIOSCAN-5M (../shared/reference/barcodebert.md):

- vocabulary `[MASK]` = 0, `[UNK]` = 1, then the 4^k k-mers over `ACGT` in lexicographic order from id 2;
- any k-mer with a character outside upper-case `ACGT` (N, IUPAC, lowercase, `-`, ...) is `[UNK]`;
- drop the first `offset` nucleotides; cut to `max_len`, or right-pad with `N` to `max_len` and mask out
  the padding and a trailing partial k-mer; tokens are `x[i:i+k]` for i = 0, k, 2k, ... (`max_len // k`).

Why vectorised: the reference tokenizer is pure Python, one sequence at a time. Here each batch is padded
into one contiguous byte buffer (one `str.join`), viewed as a `(n, max_len)` uint8 matrix without a copy,
and packed into base-4 ids with lookup tables over *pairs* of bytes (a uint16 view): for k divisible by 4, a
second table over pairs of 2-mer codes gives whole 4-mers, so k=4 needs two gathers and no arithmetic.
Invalid characters map to a large negative value, so a k-mer is `[UNK]` exactly when its packed value is
negative: no separate validity pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from bioscan_stream.constants import DNA_MAX_LEN

__all__ = ["MASK_ID", "UNK_ID", "KmerTokenizer", "strip_trailing_n"]

MASK_ID = 0
UNK_ID = 1
#: Number of special tokens before the first k-mer id.
N_SPECIAL = 2
_ALPHABET = "ACGT"
_PAD_CHAR = "N"
#: Largest k whose packed values fit int64 together with the invalid sentinel (4^(2k) < 2^63).
_MAX_K = 15


def strip_trailing_n(seq: str) -> str:
    """Drop trailing `N`s (no information, only padding); leading and internal `N`s are kept as in the paper."""
    return seq.rstrip(_PAD_CHAR)


def _packing_dtype(k: int, group: int) -> type[np.signedinteger]:
    """Narrowest integer type that holds the most negative packed value (every digit invalid).

    Narrow types matter: the table lookup and the multiply-adds are memory-bound (int16 for k=4).
    """
    most_negative = 4**k * (4**k - 1) // (4**group - 1)
    for dtype in (np.int16, np.int32):
        if most_negative < np.iinfo(dtype).max:
            return dtype
    return np.int64


def _lookup_table(group: int, k: int, dtype: type[np.signedinteger]) -> np.ndarray:
    """Map one byte (group 1) or a little-endian byte pair (group 2) to its base-4 code; invalid -> -4^k."""
    bad = -(4**k)
    single = np.full(256, bad, dtype=np.int64)
    for code, char in enumerate(_ALPHABET.encode("ascii")):
        single[char] = code
    if group == 1:
        return single.astype(dtype)
    return _combine(single, single, 4, bad).astype(dtype)


def _combine(first: np.ndarray, second: np.ndarray, base: int, bad: int) -> np.ndarray:
    """Table over little-endian pairs (index = first + 256 * second): first is the high-order digit."""
    a, b = first[None, :], second[:, None]
    return np.where((a < 0) | (b < 0), bad, a * base + b).reshape(-1)


def _quad_tables(k: int, dtype: type[np.signedinteger]) -> tuple[np.ndarray, np.ndarray]:
    """Two gathers that turn 4 bytes into one 4-mer code: byte pair -> 2-mer code (uint8, 16 = invalid),
    then a pair of 2-mer codes -> 4-mer code (invalid -> -4^k)."""
    pair = _lookup_table(2, 2, np.int64)
    pair_u8 = np.where(pair < 0, 16, pair).astype(np.uint8)
    codes = np.full(256, -(4**k), dtype=np.int64)
    codes[:16] = np.arange(16)
    return pair_u8, _combine(codes, codes, 16, -(4**k)).astype(dtype)


class KmerTokenizer:
    """Non-overlapping k-mer tokenizer with BarcodeBERT's vocabulary, padding and attention mask.

    Args:
        k: k-mer length (1..15); the vocabulary has 4^k + 2 ids.
        max_len: nucleotides kept after the offset (660 in the paper); yields `max_len // k` tokens.

    Example:
        >>> ids, mask = KmerTokenizer(k=4).encode("ACGTNACGTTGCA")
        >>> ids[:4].tolist(), mask[:4].tolist()
        ([29, 1, 251, 1], [1, 1, 1, 0])
    """

    def __init__(self, k: int = 4, max_len: int = DNA_MAX_LEN) -> None:
        if not 1 <= k <= _MAX_K:
            raise ValueError(f"k must be in 1..{_MAX_K}, got {k}")
        if max_len < k:
            raise ValueError(f"max_len ({max_len}) must be at least k ({k})")
        self.k = k
        self.max_len = max_len
        self.num_tokens = max_len // k
        # Characters per table gather: 4 when k allows it (two gathers, no arithmetic for k=4), else 2 or 1.
        self._group = 4 if k % 4 == 0 else 2 if k % 2 == 0 else 1
        dtype = _packing_dtype(k, self._group)
        if self._group == 4:
            self._pair_table, self._table = _quad_tables(k, dtype)
        else:
            self._table = _lookup_table(self._group, k, dtype)

    def __repr__(self) -> str:
        return f"KmerTokenizer(k={self.k}, max_len={self.max_len})"

    @property
    def vocab_size(self) -> int:
        """4^k k-mers plus `[MASK]` and `[UNK]`."""
        return 4**self.k + N_SPECIAL

    def id_to_kmer(self, token_id: int) -> str:
        """The string of one id: `[MASK]`, `[UNK]` or the k-mer."""
        if token_id == MASK_ID:
            return "[MASK]"
        if token_id == UNK_ID:
            return "[UNK]"
        if not N_SPECIAL <= token_id < self.vocab_size:
            raise ValueError(f"id {token_id} is outside the vocabulary of size {self.vocab_size}")
        value = token_id - N_SPECIAL
        return "".join(_ALPHABET[(value >> (2 * (self.k - 1 - i))) & 3] for i in range(self.k))

    def decode(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """Token strings of a 1-D id sequence (for inspection; the tokenizer is lossy on non-ACGT input)."""
        return [self.id_to_kmer(int(i)) for i in ids]

    def vocabulary(self) -> dict[str, int]:
        """The full k-mer -> id mapping, e.g. for a reference implementation or an export."""
        kmers = ("".join(p) for p in itertools.product(_ALPHABET, repeat=self.k))
        return {"[MASK]": MASK_ID, "[UNK]": UNK_ID, **{s: i + N_SPECIAL for i, s in enumerate(kmers)}}

    def encode(self, seq: str, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Tokenize one barcode: `(ids int64, mask int8)`, each of shape `(max_len // k,)`."""
        ids, mask = self.encode_batch([seq], offsets=[offset])
        return ids[0], mask[0]

    def encode_batch(
        self, seqs: Sequence[str], offsets: Sequence[int] | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tokenize a batch: `(ids int64, mask int8)`, each of shape `(len(seqs), max_len // k)`.

        Args:
            seqs: barcodes as `str` (any characters; non-`ACGT` ones give `[UNK]`).
            offsets: nucleotides to drop at the start of each sequence (augmentation); default 0.
        """
        cut = self._cut(seqs, offsets)
        n, length = len(cut), self.max_len
        lengths = np.fromiter(map(len, cut), dtype=np.int64, count=n)
        # "replace" keeps one byte per character, so a non-ASCII character becomes '?' (-> [UNK]) in place.
        raw = "".join([s.ljust(length, _PAD_CHAR) for s in cut]).encode("ascii", "replace")
        matrix = np.frombuffer(raw, dtype=np.uint8).reshape(n, length)[:, : self.num_tokens * self.k]
        mask = (np.arange(self.num_tokens) < (lengths // self.k)[:, None]).view(np.int8)  # bool -> 0/1, no copy
        return self._pack(matrix), mask

    def _cut(self, seqs: Sequence[str], offsets: Sequence[int] | np.ndarray | None) -> list[str]:
        """Apply the offsets and the cut to `max_len` (cheap string slices, no copies of the long tail)."""
        if isinstance(seqs, str):
            raise TypeError("encode_batch takes a sequence of strings; use encode() for one barcode")
        if offsets is None:
            return [s[: self.max_len] for s in seqs]
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.shape != (len(seqs),):
            raise ValueError(f"offsets has shape {offsets.shape}, expected ({len(seqs)},)")
        if offsets.size and offsets.min() < 0:
            raise ValueError(f"offsets must be >= 0, got {int(offsets.min())}")
        return [s[o : o + self.max_len] for s, o in zip(seqs, offsets.tolist(), strict=True)]

    def _pack(self, matrix: np.ndarray) -> np.ndarray:
        """Base-4 ids of the k-mers of a `(n, T * k)` uint8 matrix; any invalid byte makes its k-mer `[UNK]`."""
        n, group = matrix.shape[0], self._group
        units = matrix.view(np.dtype("<u2")) if group > 1 else matrix
        if group == 4:  # byte pairs -> 2-mer codes, whose pairs index the 4-mer table below
            units = np.take(self._pair_table, units, mode="clip").view(np.dtype("<u2"))
        # NOTE: take(mode="clip") skips the bounds check (every uint8/uint16 is a valid row): 0.38 vs 0.63 us/seq
        # for k=4 on this 2-core box, 2026-11. The table is tiny (<= 512 KiB), so the gather stays in cache.
        codes = np.take(self._table, units, mode="clip").reshape(n, self.num_tokens, self.k // group)
        base = 4**group
        acc = np.ascontiguousarray(codes[:, :, 0])  # a copy unless k == group (then codes is ours to reuse)
        for j in range(1, codes.shape[2]):
            acc *= base
            acc += codes[:, :, j]
        # An invalid k-mer packs to <= -4 (its sentinel -4^k outweighs every valid digit), so it clips to UNK.
        np.maximum(acc, UNK_ID - N_SPECIAL, out=acc)
        return np.add(acc, N_SPECIAL, dtype=np.int64)
