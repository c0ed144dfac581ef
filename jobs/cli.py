"""`bioscan-stream`: one subcommand per job. Each subcommand is the `main(argv)` of a module in `jobs/`."""

from __future__ import annotations

import importlib
import sys

#: subcommand -> (job module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("jobs.synth_release", "write a synthetic BIOSCAN-5M release in the official layout"),
    "partition": ("jobs.partition_metadata", "assign the 8 partitions to a metadata CSV with the published rules"),
    "stats": ("jobs.compute_stats", "Table 2/3-style statistics of a release (terminal, JSON, PNG)"),
    "contact-sheet": ("jobs.contact_sheet", "PNG of synthetic originals beside the real fixture photos"),
    "shards": ("jobs.convert", "convert a release into WebDataset shards grouped by split (Ray)"),
    "verify": ("jobs.verify_shards", "re-check a shard set against its manifest"),
    "stream": ("jobs.stream_shards", "stream a shard set and print throughput and a sample"),
    "pretrain-dna": ("jobs.pretrain_barcodebert", "pretrain BarcodeBERT on the DNA-only shards (Ray Train)"),
    "crop": ("jobs.crop", "detect the insect in original shards or a release tree, write cropped shard sets (Ray)"),
    "embed": ("jobs.embed", "embed a shard set with a zoo encoder into an embedding store (Ray Data)"),
    "index": ("jobs.build_index", "a FAISS index of an embedding store, tuned to a recall target (Ray shards)"),
    "search": ("jobs.search_index", "nearest neighbours of a query store's rows in an index (processids, scores)"),
    "probe-dna": ("jobs.probe_dna", "embeddings, 1-NN genus probe, linear probe and fine-tuning of a DNA model"),
    "evaluate": ("jobs.evaluate", "retrieval, zero-shot clustering or DNA probes over embedding stores"),
    "train-classifier": ("jobs.train_classifier", "fine-tune a timm image classifier on order / Diptera family"),
    "train-clip": ("jobs.train_clip", "CLIP-style image-DNA-text contrastive training (Ray Train)"),
    "pipeline": ("jobs.pipeline", "every stage from release to report, from one TOML config (resumable)"),
    "bench": ("jobs.bench", "run the benchmarks (or --quick ones) and render the dashboard benchmarks/README.md"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: bioscan-stream COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`bioscan-stream COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch `argv[0]` to its job module's `main`."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"bioscan-stream: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
