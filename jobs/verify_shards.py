"""`bioscan-stream verify OUT/<package>`: re-hash every shard against its manifest and recount its samples."""

from __future__ import annotations

import argparse
import sys

from bioscan_stream.shards.verify import verify_shards


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bioscan-stream verify", description=__doc__)
    parser.add_argument("urls", nargs="+", help="shard-set folders holding index.json (local or s3://)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    failed = 0
    for url in args.urls:
        report = verify_shards(url)
        for problem in report.problems:
            print(f"{url}: {problem}", file=sys.stderr)
        status = "OK" if report.ok else f"FAILED ({len(report.problems)} problem(s))"
        print(f"{url}: {report.shards} shards, {report.samples} samples, {report.bytes} bytes: {status}")
        failed += not report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
