"""BarcodeBERT's non-overlapping k-mer tokenizer, id for id, vectorised over batches.

Sits between the stream (which yields barcode strings) and the DNA models in `zoo`: a batch of strings
becomes `(ids, mask)` numpy arrays that go straight to torch. The rules are those of the public BarcodeBERT
code used for BIOSCAN-5M (../shared/reference/barcodebert.md):

- vocabulary `[MASK]` = 0, `[UNK]` = 1, then the 4^k k-mers over `ACGT` in lexicographic order from id 2;
- any k-mer with a character outside upper-case `ACGT` (N, IUPAC, lowercase, `-`, ...) is `[UNK]`;
- drop the first `offset` nucleotides; cut to `max_len`, or right-pad with `N` to `max_len` and mask out
  the padding and a trailing partial k-mer; tokens are `x[i:i+k]` for i = 0, k, 2k, ... (`max_len // k`).

Why compiled kernels: the reference tokenizer is pure Python, one sequence at a time. Here a batch is joined
once into one byte buffer (no padding strings, no slices); one vectorised pass turns bytes into base-4 digits
with an invalid bit, and a numba kernel compiled per k walks the digits once: offsets, the cut to `max_len`,
four digits per multiply, padding and the mask, written straight into the output arrays. History on the 2-core
AVX2 box (k=4, ns per 658-nt barcode, kernel only): numpy gathers over a padded matrix ~1,000; one kernel with
a byte-pair table and k as an argument ~600; digits + per-k kernel ~300.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence

import numba
import numpy as np

from bioscan_stream.constants import DNA_MAX_LEN

__all__ = ["MASK_ID", "UNK_ID", "KmerTokenizer", "strip_trailing_n"]

MASK_ID = 0
UNK_ID = 1
#: Number of special tokens before the first k-mer id.
N_SPECIAL = 2
_ALPHABET = "ACGT"
_PAD_CHAR = "N"
#: Largest k supported: ids of 4^15 + 2 already need a 2-GiB embedding table; ids stay far inside int64.
_MAX_K = 15


def strip_trailing_n(seq: str) -> str:
    """Drop trailing `N`s (no information, only padding); leading and internal `N`s are kept as in the paper."""
    return seq.rstrip(_PAD_CHAR)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _nucleotide_codes(buf: np.ndarray, codes: np.ndarray) -> None:  # pragma: no cover - compiled
    """Base-4 digit of every byte (A0 C1 G2 T3), with bit 7 set on any other byte.

    Arithmetic instead of a table: `(b >> 1) & 3` maps A, C, G, T to 0, 1, 3, 2 and an xor with its high bit
    restores the lexicographic order; branch-free, so LLVM vectorises the loop (~0.1 ns per byte).
    """
    for j in range(buf.shape[0]):
        b = buf[j]
        c = (b >> 1) & 3
        valid = (b == 65) | (b == 67) | (b == 71) | (b == 84)
        codes[j] = (c ^ (c >> 1)) | ((1 - np.uint8(valid)) << 7)


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _four_digits(codes: np.ndarray, p: int) -> tuple[np.int64, np.int64]:  # pragma: no cover - compiled
    """The 4-mer value (0..255) of the codes at p..p+3, and their invalid bits (non-zero -> `[UNK]`).

    The four bytes are combined into one word (one load after LLVM's load combining); one multiply then
    sums `digit_j * 4^(3-j)` into the top byte without carries, since every partial sum stays below 256.
    """
    word = (
        np.int64(codes[p])
        | (np.int64(codes[p + 1]) << 8)
        | (np.int64(codes[p + 2]) << 16)
        | (np.int64(codes[p + 3]) << 24)
    )
    return ((word * 0x40100401) >> 24) & 0xFF, word & 0x80808080


@functools.cache
def _kmer_kernel(k: int) -> Callable[..., None]:
    """The tokenizer kernel compiled for one k (a closure constant, so LLVM unrolls the k-mer loop).

    A kernel with k as a runtime argument was 2x slower: its inner loops could not be unrolled.
    """
    quads = k // 4

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def kernel(codes, starts, lengths, offsets, max_len, ids, mask):  # type: ignore[no-untyped-def]  # pragma: no cover
        n, num_tokens = ids.shape
        for i in range(n):
            length = min(max(lengths[i] - offsets[i], 0), max_len)
            full = min(length // k, num_tokens)
            first = starts[i] + offsets[i]
            row = ids[i]
            for t in range(full):
                p = first + k * t
                value = 0
                invalid = 0
                for q in range(quads):
                    digits, bad = _four_digits(codes, p + 4 * q)
                    value = (value << 8) | digits
                    invalid |= bad
                for r in range(4 * quads, k):
                    code = np.int64(codes[p + r])
                    value = (value << 2) | code
                    invalid |= code & 0x80
                row[t] = UNK_ID if invalid else value + N_SPECIAL
            mask[i, :full] = 1
            row[full:] = UNK_ID  # padding with N (and a trailing partial k-mer): [UNK], masked out
            mask[i, full:] = 0

    return kernel


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
        offsets = self._offsets(seqs, offsets)
        n = len(seqs)
        lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=n)
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        # "replace" keeps one byte per character, so a non-ASCII character becomes '?' (-> [UNK]) in place.
        buf = np.frombuffer("".join(seqs).encode("ascii", "replace"), dtype=np.uint8)
        codes = np.empty_like(buf)
        _nucleotide_codes(buf, codes)
        ids = np.empty((n, self.num_tokens), dtype=np.int64)
        mask = np.empty((n, self.num_tokens), dtype=np.int8)
        _kmer_kernel(self.k)(codes, starts, lengths, offsets, self.max_len, ids, mask)
        return ids, mask

    @staticmethod
    def _offsets(seqs: Sequence[str], offsets: Sequence[int] | np.ndarray | None) -> np.ndarray:
        """Validated per-sequence offsets as int64 (zeros by default)."""
        if isinstance(seqs, str):
            raise TypeError("encode_batch takes a sequence of strings; use encode() for one barcode")
        if offsets is None:
            return np.zeros(len(seqs), dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.shape != (len(seqs),):
            raise ValueError(f"offsets has shape {offsets.shape}, expected ({len(seqs)},)")
        if offsets.size and offsets.min() < 0:
            raise ValueError(f"offsets must be >= 0, got {int(offsets.min())}")
        return offsets
