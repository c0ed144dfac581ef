"""`bioscan-stream verify OUT`: re-hash every shard against its manifest and recount its samples.

OUT is a shard-set folder (`OUT/cropped_256`) or any folder above shard sets (the OUT of `bioscan-stream shards`,
which holds one set per package plus `dna`): every set found under it is verified.
"""

from __future__ import annotations

import argparse
import sys

from bioscan_stream.shards.verify import find_shard_sets, verify_shards


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bioscan-stream verify", description=__doc__.splitlines()[0])
    parser.add_argument(
        "urls", nargs="+", help="shard-set folders, or folders above them such as the OUT of `shards` (local or s3://)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    failed = 0
    for given in args.urls:
        sets = find_shard_sets(given)
        if not sets:
            print(
                f"{given}: no shard set (index.json) at or under it: give the OUT of `bioscan-stream shards`",
                file=sys.stderr,
            )
            failed += 1
        for url in sets:
            report = verify_shards(url)
            for problem in report.problems:
                print(f"{url}: {problem}", file=sys.stderr)
            status = "OK" if report.ok else f"FAILED ({len(report.problems)} problem(s))"
            print(f"{url}: {report.shards} shards, {report.samples} samples, {report.bytes} bytes: {status}")
            failed += not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
