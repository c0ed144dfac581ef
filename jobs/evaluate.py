"""`bioscan-stream evaluate`: retrieval, zero-shot clustering and DNA probes over embedding stores.

    bioscan-stream evaluate retrieval --store dna=stores/dna --store image=stores/img --out reports/
    bioscan-stream evaluate clustering --store stores/dna --seeds 0 1 2 --out reports/
    bioscan-stream evaluate probe --store stores/dna --out reports/

Each writes `<kind>.json`, `<kind>.md` (the paper's table layout) and, for retrieval and clustering, a PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from zoo.evaluation import (
    ClusteringConfig,
    RetrievalConfig,
    evaluate_clustering,
    evaluate_retrieval,
    probe_store,
    write_clustering_report,
    write_retrieval_report,
)
from zoo.evaluation.clustering import WARD_BACKENDS, ZSCORE_MODES
from zoo.evaluation.search import TIE_MODES


def _named(value: str) -> tuple[str, str]:
    """`name=URL` -> (name, URL); a bare URL is named after the store's modality."""
    if "=" in value and "://" not in value.split("=", 1)[0]:
        name, url = value.split("=", 1)
        return name, url
    from zoo.embedding import read_store_index

    return str(read_store_index(value)["modality"]), value


def _pair(value: str) -> tuple[str, str]:
    query, sep, key = value.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"pair {value!r} must be QUERY:KEY, e.g. image:dna")
    return query, key


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bioscan-stream evaluate", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="kind", required=True)
    for kind in ("retrieval", "clustering", "probe"):
        s = sub.add_parser(kind)
        s.add_argument("--store", action="append", required=True, type=_named, metavar="[NAME=]STORE",
                       help="embedding store (repeat per modality); NAME defaults to its modality")  # fmt: skip
        s.add_argument("--out", required=True, help="report folder")
    r = sub.choices["retrieval"]
    r.add_argument("--pair", action="append", default=[], type=_pair, metavar="QUERY:KEY",
                   help="query->key pair (repeat; default: each store with itself + equal-width crosses)")  # fmt: skip
    r.add_argument("--split-set", choices=("test", "val"), default="test", help="queries: test/test_unseen or val/...")
    r.add_argument("--tie", choices=TIE_MODES, default="canonical")
    r.add_argument("--device", help="exact-search device (default: cuda when available)")
    r.add_argument("--no-join", action="store_true", help="do not restrict stores to their common processids")
    r.add_argument(
        "--index",
        action="append",
        default=[],
        metavar="KEYSTORE=INDEX",
        help="also search this ANN index for pairs with keys in KEYSTORE and report the change",
    )
    c = sub.choices["clustering"]
    c.add_argument("--seeds", type=int, nargs="+", default=[0])
    c.add_argument("--zscore", choices=ZSCORE_MODES, default="per_split")
    c.add_argument("--ward", choices=WARD_BACKENDS, default="fastcluster")
    c.add_argument("--no-scatter", action="store_true", help="skip the 2-D UMAP scatter plot")
    b = sub.choices["probe"]
    b.add_argument("--linear-epochs", type=int, default=100, help="0 skips the linear probe")
    b.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _retrieval(args: argparse.Namespace) -> str:
    seen = args.split_set
    config = RetrievalConfig(
        stores=tuple(args.store),
        pairs=tuple(args.pair),
        seen=seen,
        unseen=f"{seen}_unseen",
        tie=args.tie,
        device=args.device,
        join=not args.no_join,
        indices=tuple(tuple(v.split("=", 1)) for v in args.index),  # type: ignore[misc]
    )
    paths = write_retrieval_report(evaluate_retrieval(config), args.out)
    return paths["md"].read_text()


def _clustering(args: argparse.Namespace) -> str:
    config = ClusteringConfig(
        stores=tuple(args.store),
        seeds=tuple(args.seeds),
        zscore=args.zscore,
        ward=args.ward,
        scatter=not args.no_scatter,
    )
    paths = write_clustering_report(evaluate_clustering(config), args.out)
    return paths["md"].read_text()


def _probe(args: argparse.Namespace) -> str:
    if len(args.store) != 1:
        raise SystemExit("evaluate probe takes one --store")
    name, url = args.store[0]
    results = probe_store(url, linear_epochs=args.linear_epochs, seed=args.seed, name=name)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(results, indent=1))
    (out / "probe.md").write_text(results["markdown"])
    return str(results["markdown"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = {"retrieval": _retrieval, "clustering": _clustering, "probe": _probe}[args.kind]
    print(run(args))
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
