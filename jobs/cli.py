"""`bioscan-stream`: one subcommand per job. Each subcommand is the `main(argv)` of a module in `jobs/`."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn

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


#: What jobs raise for input they cannot use (a missing path, an unknown split or model name, a bad value): the
#: dispatcher prints it as one line that names the problem. Other exceptions are bugs and keep their traceback.
_INPUT_ERRORS = (OSError, ValueError, KeyError)


def _one_line(error: BaseException) -> str:
    """The message of an input error on one line (a Ray task error carries its cause; KeyError quotes its text)."""
    error = getattr(error, "cause", None) or error
    if isinstance(error, OSError) and error.filename and error.strerror:  # "[Errno 20] Not a directory: '...'"
        return f"{error.filename}: {error.strerror.lower()} (check the path)"
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def _argparse_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    parser.exit(2, f"{parser.prog}: {message} (`{parser.prog} --help` lists the options)\n")


@contextlib.contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    """argparse errors as one line (its default prints the whole usage block first); restored afterwards, since
    the jobs also run in-process (tests, `python -m jobs.<module>`)."""
    default = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = _argparse_error  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = default  # type: ignore[method-assign]


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
    return run_job(module.main, argv[1:], f"bioscan-stream {argv[0]}")


def run_job(job_main: Callable[[list[str]], int | None], args: list[str], name: str) -> int:
    """Run a job's `main(args)`, input errors as one line prefixed with `name` (the CLI and `python -m jobs.X`)."""
    try:
        with _one_line_usage_errors():
            return int(job_main(args) or 0)
    except _INPUT_ERRORS as error:
        print(f"{name}: {_one_line(error)}", file=sys.stderr)
        return 1


def run_module(job_main: Callable[[list[str]], int | None]) -> int:
    """The `__main__` of a job module: `python -m jobs.X ARGS` (what `ray job submit` runs) fails as the CLI does."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    return run_job(job_main, sys.argv[1:], f"python -m {spec.name if spec else job_main.__module__}")


if __name__ == "__main__":
    sys.exit(main())
