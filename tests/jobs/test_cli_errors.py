"""Bad input to every `bioscan-stream` command ends in one line that names the problem, never a traceback.

Parametrised over `jobs.cli.COMMANDS`, so a new subcommand is covered without editing this file: each command's
argparse parser is read by running its `main` with parsing intercepted, then the command is run in process
(through `jobs.cli.main`, exactly what the console script calls) with an unusable path in every positional
argument, and with a wrong value for its first option that has a fixed set of choices. An exception escaping
`jobs.cli.main` is what would print a traceback, so the test fails on one; it also fails on "Traceback" in the
output (a job printing one itself). Two subprocess runs check the console script itself.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bioscan_stream.shards.tarwriter import write_tar
from jobs import cli

BIN = Path(sys.executable).parent
#: Options whose value a job writes to: they get a fresh folder, so the unusable path is the job's input
#: (a positional output, as in `contact-sheet OUT.png`, gets the unusable path).
OUTPUT_DESTS = {"out", "output"}
BAD_CHOICE = "no-such-choice"


class _Parsed(Exception):
    """Raised in place of argument parsing, carrying the parser."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


@contextlib.contextmanager
def _intercepted_parsing() -> Iterator[None]:
    original = argparse.ArgumentParser.parse_known_args

    def intercept(self: argparse.ArgumentParser, *_: Any, **__: Any) -> Any:
        raise _Parsed(self)

    argparse.ArgumentParser.parse_known_args = intercept  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_known_args = original  # type: ignore[method-assign]


def parser_of(command: str) -> argparse.ArgumentParser:
    """The argparse parser that `command`'s job builds (its `main` is stopped at parsing)."""
    module = importlib.import_module(cli.COMMANDS[command][0])
    with _intercepted_parsing(), pytest.raises(_Parsed) as parsed:
        module.main([])
    return parsed.value.parser


def _value(action: argparse.Action, bad: str, out: str) -> str:
    return out if action.option_strings and action.dest in OUTPUT_DESTS else bad


def bad_path_argv(parser: argparse.ArgumentParser, bad: str, out: str) -> list[str]:
    """Every positional (and required option) given an unusable path; output options a fresh folder; the first
    subcommand of a command that has subcommands."""
    positionals: list[str] = []
    options: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name, sub = next(iter(action.choices.items()))
            return [*positionals, name, *bad_path_argv(sub, bad, out), *options]
        if not action.option_strings:
            positionals.append(_value(action, bad, out))
        elif action.required:
            options += [action.option_strings[0], _value(action, bad, out)]
    return [*positionals, *options]


def wrong_choice_argv(parser: argparse.ArgumentParser, bad: str, out: str) -> list[str] | None:
    """`bad_path_argv` with `BAD_CHOICE` for the first argument that has a fixed set of choices, or None."""
    argv = bad_path_argv(parser, bad, out)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name, sub = next(iter(action.choices.items()))
            at = argv.index(name)
            if (rest := wrong_choice_argv(sub, bad, out)) is not None:
                return [*argv[:at], name, *rest]
            return [*argv[:at], BAD_CHOICE]
        if action.choices is not None:
            if action.option_strings:  # first, so argparse meets it before converting the other values
                return [action.option_strings[0], BAD_CHOICE, *argv]
            return [BAD_CHOICE if value == bad else value for value in argv]
    return None


def run_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`jobs.cli.main(argv)` as the console script runs it: its exit code, stdout and stderr."""
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse errors; anything else escaping is what prints a traceback
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, out: str, err: str, *, naming: str) -> None:
    assert code != 0
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "no message on stderr"
    assert len(lines) == 1, f"not one line: {err}"
    assert naming in lines[0], f"{lines[0]!r} does not name {naming!r}"


@pytest.fixture
def unusable(tmp_path: Path) -> tuple[str, str]:
    """(a path below a regular file: missing as an input, impossible as an output; a fresh output folder)."""
    (tmp_path / "a-file").write_text("not a folder\n")
    return str(tmp_path / "a-file" / "missing"), str(tmp_path / "out")


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_missing_path_is_one_line(command: str, unusable: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    bad, out = unusable
    argv = [command, *bad_path_argv(parser_of(command), bad, out)]
    if bad not in argv:  # never run a command with its defaults (`bench` would run every benchmark)
        pytest.skip(f"{command} takes no path argument")
    code, stdout, stderr = run_in_process(argv, capsys)
    assert_one_line_error(code, stdout, stderr, naming="a-file")


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_wrong_choice_is_one_line(command: str, unusable: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = wrong_choice_argv(parser_of(command), *unusable)
    if argv is None:
        pytest.skip(f"{command} has no option with a fixed set of choices")
    code, stdout, stderr = run_in_process([command, *argv], capsys)
    assert_one_line_error(code, stdout, stderr, naming=BAD_CHOICE)
    assert code == 2 and "choose from" in stderr


def _shard_set(root: Path, splits: tuple[str, ...] = ("train", "val")) -> Path:
    """A DNA-only shard set with its manifest (what `stream` and the DNA jobs resolve a split against)."""
    entries = {}
    for split in splits:
        info = write_tar(root / split / f"{split}-000000.tar", [{"__key__": "P1", "dna.txt": b"ACGT"}])
        entries[split] = {"samples": 1, "shards": [{"path": f"{split}/{info.name}", "samples": 1}]}
    (root / "index.json").write_text(json.dumps({"splits": entries}))
    return root


def test_stream_wrong_split_lists_the_manifest_splits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = _shard_set(tmp_path / "set")
    code, out, err = run_in_process(["stream", str(shards), "--split", "trian", "--modalities", "dna"], capsys)
    assert_one_line_error(code, out, err, naming="'trian'")
    assert "its splits: train, val" in err


def test_probe_dna_unknown_model_lists_the_known_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = _shard_set(tmp_path / "set", ("train", "test", "test_unseen"))
    argv = ["probe-dna", str(shards), "--model", BAD_CHOICE, "--output", str(tmp_path / "out")]
    code, out, err = run_in_process(argv, capsys)
    assert_one_line_error(code, out, err, naming=BAD_CHOICE)
    assert "known: " in err and "barcodebert_8_4_4" in err


def test_console_script_missing_shards(tmp_path: Path) -> None:
    """The installed `bioscan-stream` itself (one run: ~20 s of imports here): the issue's traceback is one line."""
    missing = str(tmp_path / "missing")
    run = subprocess.run(
        [str(BIN / "bioscan-stream"), "pretrain-dna", missing, "--output", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_line_error(run.returncode, run.stdout, run.stderr, naming=missing)
    assert "bioscan-stream shards" in run.stderr


def test_python_m_job_missing_shards(tmp_path: Path) -> None:
    """`python -m jobs.X` (what `ray job submit` runs) fails in one line too: every job module's `__main__`."""
    missing = str(tmp_path / "missing")
    run = subprocess.run(
        [sys.executable, "-m", "jobs.probe_dna", missing, "--output", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[2],
    )
    assert_one_line_error(run.returncode, run.stdout, run.stderr, naming=missing)
    assert run.stderr.startswith("python -m jobs.probe_dna: ")


def test_every_job_module_main_goes_through_the_one_line_handler() -> None:
    for module in sorted({m for m, _ in cli.COMMANDS.values()}):
        source = Path(importlib.import_module(module).__file__ or "").read_text()
        assert "sys.exit(run_module(main))" in source, f"{module}: `python -m {module}` would print tracebacks"
