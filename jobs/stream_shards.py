"""`bioscan-stream stream URL --split S`: stream a shard set through `BioscanStream` and print throughput and a sample.

URL is a shard-set folder or `s3://` prefix (endpoint from the standard AWS variables), a `.tar`, a brace
pattern or a `pipe:` command. Decoding runs in `--workers` DataLoader processes; the first batch (worker
start-up, first shard open) is timed separately from the steady state.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from bioscan_stream.malloc import tune_malloc
from bioscan_stream.stream import BioscanStream, CorruptShardError, make_loader

DEFAULT_BATCHES = 50
DEFAULT_BATCH_SIZE = 64
DEFAULT_WORKERS = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bioscan-stream stream", description=__doc__.splitlines()[0])
    parser.add_argument("url", help="shard-set folder, s3:// prefix, .tar, brace pattern or pipe: command")
    parser.add_argument("--split", default="train", help="split to read (%(default)s)")
    parser.add_argument(
        "--batches", type=int, default=DEFAULT_BATCHES, help="batches to time, 0 = one epoch (%(default)s)"
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="%(default)s")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="DataLoader processes (%(default)s)")
    parser.add_argument("--modalities", default="image,dna", help="comma-separated: image,dna,metadata,count")
    parser.add_argument("--targets", default="species", help="comma-separated label columns ('' for none)")
    parser.add_argument("--shuffle-buffer", type=int, default=1000, help="%(default)s")
    parser.add_argument("--seed", type=int, default=0, help="%(default)s")
    parser.add_argument("--skip-corrupt", action="store_true", help="skip and count corrupt shards instead of failing")
    return parser.parse_args(argv)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x for x in text.split(",") if x)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        head = value.flatten()[:8].tolist()
        return f"{tuple(value.shape)} {value.dtype} {head}{' ...' if value.numel() > 8 else ''}"
    return repr(value)[:100]


def _print_sample(batch: dict[str, Any]) -> None:
    print("first sample:")
    for name, value in batch.items():
        item = value[0] if isinstance(value, torch.Tensor | list) and len(value) else value
        print(f"  {name:<12} {_describe(item)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tune_malloc()
    try:
        dataset = BioscanStream(
            args.url, args.split, _csv(args.modalities), _csv(args.targets), batch_size=args.batch_size,
            shuffle_buffer=args.shuffle_buffer, seed=args.seed, on_corrupt="skip" if args.skip_corrupt else "raise",
        )  # fmt: skip
    except (FileNotFoundError, KeyError, ValueError) as err:
        print(f"bioscan-stream stream: {err}", file=sys.stderr)
        return 1
    loader = make_loader(dataset, num_workers=args.workers)
    start = time.perf_counter()
    samples, first_at, steady = 0, 0.0, 0
    try:
        for number, batch in enumerate(loader):
            if number == 0:
                first_at = time.perf_counter() - start
                _print_sample(batch)
            else:
                steady += len(batch["__key__"])
            samples += len(batch["__key__"])
            if args.batches and number + 1 >= args.batches:
                break
    except CorruptShardError as err:
        print(f"bioscan-stream stream: {err}", file=sys.stderr)
        return 1
    total = time.perf_counter() - start
    rate = steady / max(total - first_at, 1e-9)
    print(f"{samples:,d} samples in {total:.2f} s (first batch {first_at:.2f} s); steady state {rate:,.0f} samples/s "
          f"with {args.workers} worker(s), {rate / max(args.workers, 1):,.0f}/s per worker")  # fmt: skip
    if args.skip_corrupt:
        print(f"corrupt shards skipped: {sum(loader.corrupt_shards.values())}")  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
