"""`bioscan-stream pipeline [CONFIG]`: synth -> shards -> crop -> pretrain -> embed -> index -> evaluate -> report.

    bioscan-stream pipeline                                   # the embedded demo config (what `make demo` runs)
    python -m jobs.pipeline my.toml --stages shards crop       # some stages (each skipped when already complete)
    ray job submit --working-dir . -- python -m jobs.pipeline my.toml

CONFIG (TOML) names each stage's inputs, outputs and parameters (docs/pipeline.md). A stage whose outputs are
complete and were made from the same inputs and parameters is skipped, so a killed run resumes where it
stopped. Ray: the cluster named by `RAY_ADDRESS` (set under `ray job submit`) or the config, else an embedded
local runtime; the `AWS_*` variables reach every Ray task, for `s3://` paths.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from typing import Any

from zoo.pipeline import ConfigError, PipelineError, RunSettings, load_config, run_pipeline

DEFAULT_CONFIG = str(resources.files("zoo") / "pipeline_configs" / "demo.toml")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bioscan-stream pipeline", description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help="pipeline TOML (default: the demo config)")
    p.add_argument("--stages", nargs="+", metavar="STAGE", help="run only these stages (e.g. shards crop embed)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded Ray runtime (default: config)")
    p.add_argument("--progress", action="store_true", help="show the jobs' progress bars")
    return p.parse_args(argv)


def _print_step(name: str, record: dict[str, Any], skipped: bool) -> None:
    if skipped:
        print(f"{name:<16} skipped: complete (fingerprint {record['fingerprint'][:12]})", flush=True)
        return
    rate = f"{record['items_per_s']:,.1f}/s" if record["items_per_s"] else "-"
    memory = record["peak_memory_bytes"] / (1 << 30)
    print(f"{name:<16} {record['seconds']:7.1f} s  {record['items']:>8,d} {record['unit']:<9} {rate:>10}  "
          f"peak {memory:.2f} GiB", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config)
        settings = RunSettings(
            ray_address=config.ray_address or os.environ.get("RAY_ADDRESS") or None,
            num_cpus=args.num_cpus or config.num_cpus or None,
            task_env=tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))),
            progress=args.progress,
        )
        records = run_pipeline(config, settings, stages=args.stages, on_step=_print_step)
    except (ConfigError, PipelineError) as error:
        print(f"bioscan-stream pipeline: {error}", file=sys.stderr)
        return 2
    print(f"{len(records)} stage(s) complete; records in {config.state}")
    if config.report is not None and (not args.stages or "report" in args.stages):
        print(f"report: {os.path.join(config.report.out, 'index.html')}")
    return 0


if __name__ == "__main__":
    from jobs.cli import run_module

    sys.exit(run_module(main))
