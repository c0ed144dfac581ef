"""How fast does BarcodeBERT pretraining run on CPU, ours vs a reference-style loop?

Both train the same architecture with the same objective (50% masking of real k-mers, cross-entropy over all
eligible positions, AdamW) on 658-nt barcodes, in the same run:

- reference-style: per-sequence pure-Python tokenisation (the public tokenizer's structure), eager attention,
  fp32, logits for every position with `ignore_index` (the original training code's shape);
- ours: `zoo.tasks.pretrain_loop.train_worker` (vectorised tokenizer, SDPA attention, metrics, progress;
  bf16 autocast only applies on CUDA), timed from its own samples/s and tokens/s metrics.

Prints samples/s, tokens/s (attended k-mers) and the ratio for 4-4-4 and 8-4-4; appends a JSON line to
benchmarks/results/barcodebert_train.jsonl. Default sizes take a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers

import zoo
from zoo.tasks.dna_sources import ListSource
from zoo.tasks.pretrain_loop import METRICS, PretrainConfig, train_worker

sys.path.insert(0, str(Path(__file__).parent))
from bench_tokenizer import barcodes, baseline_encode  # noqa: E402  (the same per-sequence baseline)

RESULTS = Path(__file__).parent / "results" / "barcodebert_train.jsonl"


def reference_rate(name: str, seqs: list[str], *, batch: int, warmup: int, steps: int) -> dict[str, float]:
    """Samples/s and tokens/s of the straightforward loop, after `warmup` untimed steps."""
    torch.manual_seed(0)
    model = zoo.create_model(name, attn_implementation="eager").train()
    tok = model.tokenizer()
    vocab = tok.vocabulary()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4 * batch / 64, weight_decay=0.0)
    rng = np.random.default_rng(0)
    tokens, start = 0, 0.0
    for step in range(warmup + steps):
        if step == warmup:
            tokens, start = 0, time.perf_counter()
        chunk = [seqs[(step * batch + i) % len(seqs)] for i in range(batch)]
        pairs = [baseline_encode(s, vocab, tok.k, tok.max_len, offset=int(rng.integers(tok.k))) for s in chunk]
        ids = torch.stack([torch.from_numpy(p[0]) for p in pairs])
        mask = torch.stack([torch.from_numpy(p[1]) for p in pairs])
        eligible = ids >= 2
        masked = eligible & (torch.rand(ids.shape) < 0.5)
        logits = model(ids.masked_fill(masked, 0), mask)
        labels = torch.where(eligible, ids - 2, torch.full_like(ids, -100))
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        tokens += int(mask.sum())
    seconds = time.perf_counter() - start
    return {"samples_per_s": steps * batch / seconds, "tokens_per_s": tokens / seconds}


def our_rate(name: str, seqs: list[str], *, batch: int, warmup: int, steps: int) -> dict[str, float]:
    """Samples/s and tokens/s of the project's loop, from its metrics after the warmup window."""
    with tempfile.TemporaryDirectory() as out:
        cfg = PretrainConfig(
            output_dir=out,
            model=name,
            batch_size=batch,
            epochs=10**6,
            max_steps=warmup + steps,
            log_every=warmup,
            save_outputs=False,
        )
        train_worker(cfg, ListSource(seqs))
        rows = [json.loads(line) for line in (Path(out) / METRICS).read_text().splitlines()][1:]
    seconds = sum(warmup * batch / r["samples_per_s"] for r in rows)
    return {
        "samples_per_s": len(rows) * warmup * batch / seconds,
        "tokens_per_s": sum(r["tokens_per_s"] * warmup * batch / r["samples_per_s"] for r in rows) / seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["barcodebert_4_4_4", "barcodebert_8_4_4"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (also the metrics window)")
    parser.add_argument("--windows", type=int, default=2, help="timed windows of --warmup steps each")
    args = parser.parse_args(argv)
    seqs = barcodes(512)
    rows = []
    for name in args.models:
        steps = args.warmup * args.windows
        ref = reference_rate(name, seqs, batch=args.batch, warmup=args.warmup, steps=steps)
        ours = our_rate(name, seqs, batch=args.batch, warmup=args.warmup, steps=steps)
        rows.append(
            {
                "model": name,
                "batch": args.batch,
                "steps": steps,
                "reference": ref,
                "ours": ours,
                "ratio": ours["samples_per_s"] / ref["samples_per_s"],
            }
        )
        print(
            f"{name}: reference {ref['samples_per_s']:.2f} samples/s ({ref['tokens_per_s']:.0f} tokens/s), "
            f"ours {ours['samples_per_s']:.2f} samples/s ({ours['tokens_per_s']:.0f} tokens/s), "
            f"ratio {rows[-1]['ratio']:.2f}x (target >= 2x)"
        )
    record = {
        "benchmark": "barcodebert_train",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "results": rows,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
