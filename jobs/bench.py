"""`bioscan-stream bench [SCRIPT ...] [--quick]`: run the benchmarks, append their results to benchmarks/results/,
and render the dashboard (benchmarks/README.md, benchmarks/figures/history.png).

The benchmarks and the dashboard code (`benchmarks/dashboard.py`, which defines the headline ratios) live in the
source checkout beside `jobs/`, not in the installed packages: this command runs from a checkout.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def parse_args(argv: list[str] | None, scripts: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bioscan-stream bench", description=__doc__.splitlines()[0])
    parser.add_argument("scripts", nargs="*", metavar="SCRIPT", help="run only these, e.g. bench_convert.py")
    parser.add_argument("--quick", action="store_true", help="only the quick subset, on smaller inputs (minutes)")
    parser.add_argument("--render-only", action="store_true", help="run nothing; render the dashboard from results")
    parser.add_argument("--results", type=Path, default=BENCHMARKS_DIR / "results", help="results folder to render")
    parser.add_argument("--readme", type=Path, default=BENCHMARKS_DIR / "README.md", help="dashboard page to write")
    parser.add_argument(
        "--figure", type=Path, default=BENCHMARKS_DIR / "figures" / "history.png", help="history figure to write"
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.scripts if name not in scripts]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(scripts)}")
    if not args.results.is_dir():
        parser.error(f"--results {args.results}: no such folder")
    return args


def _dashboard() -> ModuleType:
    """benchmarks/dashboard.py, imported the way the benchmark scripts import their helpers (by folder)."""
    if not (BENCHMARKS_DIR / "dashboard.py").is_file():
        raise FileNotFoundError(f"no benchmarks/dashboard.py at {BENCHMARKS_DIR}: run bench from a source checkout")
    if str(BENCHMARKS_DIR) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS_DIR))
    return importlib.import_module("dashboard")


def main(argv: list[str] | None = None) -> int:
    dashboard = _dashboard()
    args = parse_args(argv, [script for script, _, _ in dashboard.BENCHMARKS])
    failed = [] if args.render_only else dashboard.run_benchmarks(quick=args.quick, only=args.scripts)
    dashboard.render(args.results, args.readme, args.figure)
    print(f"dashboard -> {args.readme}, {args.figure}")
    if failed:
        print(f"bioscan-stream bench: {len(failed)} benchmark(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
