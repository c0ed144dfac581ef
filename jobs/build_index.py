"""`bioscan-stream index STORE --out INDEX`: a FAISS index of an embedding store, tuned to a recall target.

    python -m jobs.build_index stores/dna --out indices/dna                      # auto: recall@10 >= 0.95
    python -m jobs.build_index stores/dna --out indices/dna --factory IVF1024,Flat --num-shards 4
    ray job submit --working-dir . -- python -m jobs.build_index s3://bucket/emb/dna \\
        --out s3://bucket/idx/dna --factory IVF4096,SQ8 --num-shards 16

Shards (`--num-shards` > 1) run as Ray tasks: on the cluster named by `RAY_ADDRESS` when set, else on an
embedded local runtime. A rerun after a failure skips the shards already written; a rerun after success
returns the finished index. Prints the index's `index.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from zoo.indices import IndexConfig, IndexMismatchError, run_build


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bioscan-stream index", description=__doc__.splitlines()[0])
    p.add_argument("store", help="embedding store folder, local or s3://")
    p.add_argument("--out", required=True, help="index folder, local or s3://")
    p.add_argument("--factory", default="auto", help="auto, Flat, IVF{K},Flat|SQ8|PQ{m}, HNSW{M}[,SQfp16|,SQ8]")
    p.add_argument("--splits", nargs="+", default=None, metavar="SPLIT", help="store splits (default: all)")
    p.add_argument("--query-store", help="held-out queries from this store (default: held-out store rows)")
    p.add_argument("--recall-target", type=float, default=0.95, help="recall@k vs exact search to tune to")
    p.add_argument("--k", type=int, default=10, help="the k of recall@k")
    p.add_argument("--memory-budget-gb", type=float, default=None, help="auto: GiB the index may take")
    p.add_argument("--num-queries", type=int, default=1000, help="held-out queries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-size", type=int, default=None, help="cap of the random training sample")
    p.add_argument("--num-shards", type=int, default=1, help="shards built in parallel Ray tasks")
    p.add_argument("--threads", type=int, default=0, help="faiss threads (per shard task; 0: all cores)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded Ray runtime")
    p.add_argument("--rerank", type=int, default=10, help="PQ: re-rank the top k*RERANK candidates exactly")
    p.add_argument("--flat-max-rows", type=int, default=20_000, help="auto: exact Flat up to this many rows")
    p.add_argument("--ef-construction", type=int, default=200, help="HNSW: graph build beam (faiss default 40)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = IndexConfig(
        store=args.store,
        out=args.out,
        factory=args.factory,
        splits=tuple(args.splits) if args.splits else None,
        query_store=args.query_store,
        recall_target=args.recall_target,
        k=args.k,
        memory_budget=int(args.memory_budget_gb * (1 << 30)) if args.memory_budget_gb else None,
        num_queries=args.num_queries,
        seed=args.seed,
        train_size=args.train_size,
        num_shards=args.num_shards,
        threads=args.threads,
        ray_address=os.environ.get("RAY_ADDRESS"),
        num_cpus=args.num_cpus,
        rerank=args.rerank,
        flat_max_rows=args.flat_max_rows,
        ef_construction=args.ef_construction,
    )
    try:
        meta = run_build(config)
    except (IndexMismatchError, ValueError, FileNotFoundError, KeyError) as error:
        print(f"bioscan-stream index: {error}", file=sys.stderr)
        return 2
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
