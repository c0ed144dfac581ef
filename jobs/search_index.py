"""`bioscan-stream search INDEX --store QUERIES --k 10`: nearest neighbours of a query store's rows in an index.

    python -m jobs.search_index indices/dna --store stores/dna_queries --k 10 --out neighbours.jsonl
    python -m jobs.search_index s3://bucket/idx/dna --store s3://bucket/emb/dna --splits test_unseen --k 5

Writes one JSON line per query: `{"query": processid, "neighbours": [processid, ...], "scores": [...]}`
(stdout by default). A query store from another encoder than the index, or of another dimension, is refused.
"""

from __future__ import annotations

import argparse
import json
import sys

from bioscan_stream.storage import open_url
from zoo.indices import IndexMismatchError, search


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bioscan-stream search", description=__doc__.splitlines()[0])
    p.add_argument("index", help="index folder (from `bioscan-stream index`), local or s3://")
    p.add_argument("--store", required=True, help="query embedding store, local or s3://")
    p.add_argument("--k", type=int, default=10, help="neighbours per query")
    p.add_argument("--splits", nargs="+", default=None, metavar="SPLIT", help="query store splits (default: all)")
    p.add_argument("--nprobe", type=int, default=None, help="override the tuned nprobe (IVF)")
    p.add_argument("--ef-search", type=int, default=None, help="override the tuned efSearch (HNSW)")
    p.add_argument("--out", default=None, help="JSON-lines file, local or s3:// (default: stdout)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = {name: value for name, value in (("nprobe", args.nprobe), ("efSearch", args.ef_search)) if value}
    try:
        result = search(args.index, args.store, args.k, splits=args.splits, params=params or None)
    except (IndexMismatchError, ValueError, FileNotFoundError, KeyError) as error:
        print(f"bioscan-stream search: {error}", file=sys.stderr)
        return 2
    assert result.queries is not None
    lines = (
        json.dumps({"query": q, "neighbours": ids.tolist(), "scores": [round(float(s), 6) for s in scores]})
        for q, ids, scores in zip(result.queries, result.ids, result.scores, strict=True)
    )
    text = "".join(line + "\n" for line in lines)
    if args.out:
        with open_url(args.out, "wb") as out:
            out.write(text.encode())
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
