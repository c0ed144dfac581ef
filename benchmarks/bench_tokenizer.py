"""Is the vectorised k-mer tokenizer at least 50x faster than a per-sequence pure-Python one?

Baseline (same run): the public BarcodeBERT tokenizer's logic in plain Python, one sequence at a time
(offset, cut/pad with N, split into k-mers, dict lookup, mask list, numpy arrays per sequence). Both must
give identical ids and masks on the benchmark data. Rounds alternate baseline and vectorised runs; each run
lasts ~0.5 s or more (the vectorised one tokenises the data `--passes` times: one pass takes ~12 ms, too short
to time steadily), and the ratio is reported per round as the median and spread of `--repeats` rounds.
Appends one JSON line to benchmarks/results/tokenizer.jsonl and prints sequences/s and the ratio for k=4
and k=8. `--quick`: 10,000 barcodes, 3 rounds.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
from _results import append_result, spread

from bioscan_stream.dna import UNK_ID, KmerTokenizer


def baseline_encode(seq: str, vocab: dict[str, int], k: int, max_len: int, offset: int = 0) -> tuple:
    """Straightforward per-sequence tokenizer (the reference code's structure, with a dict vocabulary)."""
    n_tokens = max_len // k
    mask = [1] * n_tokens
    x = seq[offset:]
    if len(x) > max_len:
        x = x[:max_len]
    else:
        mask[len(x) // k :] = [0] * (n_tokens - len(x) // k)
        x = x + "N" * (max_len - len(x))
    tokens = [x[i : i + k] for i in range(0, n_tokens * k, k)]
    ids = [vocab.get(t, UNK_ID) for t in tokens]
    return np.array(ids, dtype=np.int64), np.array(mask, dtype=np.int8)


def barcodes(n: int, *, length: int = 658, seed: int = 0) -> list[str]:
    """Random 658-nt barcodes with a few N runs, like real COI barcodes."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        seq = "".join(rng.choices("ACGT", k=length))
        if rng.random() < 0.3:
            start = rng.randrange(length - 20)
            seq = seq[:start] + "N" * rng.randrange(1, 20) + seq[start + 20 :]
        out.append(seq[:length])
    return out


def rate(fn: Callable[[], object], n: int) -> float:
    """Sequences per CPU-second of this (single-threaded) process for one call of `fn` over `n` sequences.

    CPU time, not wall time: the machine is shared, and other processes stretch wall time but hardly the
    CPU time of a single-threaded loop; both sides are measured the same way.
    """
    start = time.process_time()
    fn()
    return n / (time.process_time() - start)


def _consume(results: Iterator[object]) -> None:
    """Drop each result once made, as a loader does once a batch is sent; for both tokenizers alike.

    Why: keeping all 20 batch results alive (~45 MB) made every repeat fault in fresh pages for the batched
    tokenizer (allocations over glibc's mmap threshold), ~0.3 us per barcode of kernel page zeroing that swung
    its rate by 1.5x between identical runs; the per-sequence arrays of the baseline are small and never do.
    """
    for _ in results:
        pass


def run(k: int, seqs: list[str], *, batch: int, repeats: int, passes: int) -> dict:
    tok = KmerTokenizer(k=k)
    vocab = tok.vocabulary()
    ref = [baseline_encode(s, vocab, k, tok.max_len) for s in seqs]
    ids, mask = tok.encode_batch(seqs)
    assert (np.stack([r[0] for r in ref]) == ids).all() and (np.stack([r[1] for r in ref]) == mask).all()
    batches = [seqs[i : i + batch] for i in range(0, len(seqs), batch)]

    def baseline() -> None:
        _consume(baseline_encode(s, vocab, k, tok.max_len) for s in seqs)

    def vectorised() -> None:
        for _ in range(passes):
            _consume(tok.encode_batch(b) for b in batches)

    rounds = [(rate(baseline, len(seqs)), rate(vectorised, passes * len(seqs))) for _ in range(repeats)]
    return {
        "k": k,
        "batch": batch,
        "passes": passes,
        "baseline_seq_per_s": spread([base for base, _ in rounds]),
        "vectorised_seq_per_s": spread([fast for _, fast in rounds]),
        "ratio": spread([fast / base for base, fast in rounds]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-seqs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds (>= 3)")
    parser.add_argument("--passes", type=int, default=50, help="vectorised passes over the data per run")
    parser.add_argument("--quick", action="store_true", help="10,000 barcodes, 3 rounds")
    args = parser.parse_args(argv)
    num_seqs, repeats = (10_000, 3) if args.quick else (args.num_seqs, args.repeats)
    seqs = barcodes(num_seqs)
    rows = [run(k, seqs, batch=args.batch, repeats=repeats, passes=args.passes) for k in (4, 8)]
    for r in rows:
        ratio = r["ratio"]
        print(
            f"k={r['k']}: baseline {r['baseline_seq_per_s']['median']:,.0f} seq/s, vectorised "
            f"{r['vectorised_seq_per_s']['median']:,.0f} seq/s, ratio {ratio['median']:.1f}x "
            f"[{ratio['min']:.1f}-{ratio['max']:.1f}] (target >= 50x)"
        )
    record = {"benchmark": "tokenizer", "quick": args.quick, "num_seqs": num_seqs, "length": 658, "results": rows}
    append_result("tokenizer", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
