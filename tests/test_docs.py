"""The fenced code blocks of README.md and every docs/*.md run, so the examples never rot.

One test per page; a page's blocks run in order in one temporary working folder (pages create their own data
first, e.g. with `bioscan-stream synth`). Which blocks run is set by the fence's info string:

- ```bash / ```sh: `bash -euo pipefail` with the project's `.venv/bin` first on PATH;
- ```python: the project's Python, each block its own process (so each block holds its imports);
- ```bash no-run / ```python no-run: shown, not run (cluster-only commands, full-size benchmarks);
- anything else (```text, ```json, ```toml, a bare fence): output or file formats, not run.

A page whose blocks take long carries the line `<!-- docs-test: slow -->` and is marked slow.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SLOW_MARKER = "<!-- docs-test: slow -->"
SKIP = "no-run"
#: Fence language -> how to run a block of it.
RUNNERS = {
    "bash": ["bash", "-euo", "pipefail", "-c"],
    "sh": ["bash", "-euo", "pipefail", "-c"],
    "python": [sys.executable, "-c"],
}
#: A block may run this long (s): the slow pages convert, train and embed on 2 shared cores.
BLOCK_TIMEOUT = 900
#: A page may run this long (s), above pytest's default of 900: evaluation.md renders a 20k-record release.
PAGE_TIMEOUT = 3600
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>```+)(?P<info>[^`\n]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$", re.M | re.S
)


@dataclass(frozen=True)
class Block:
    """One fenced block: its first line in the page, language, whether it runs, and its code."""

    line: int
    language: str
    runs: bool
    code: str


def code_blocks(text: str) -> list[Block]:
    """The page's fenced blocks in order (indented ones inside list items included, dedented)."""
    blocks = []
    for match in _FENCE.finditer(text):
        words = match["info"].split()
        language = words[0].lower() if words else ""
        line = text.count("\n", 0, match.start()) + 1
        code = textwrap.dedent(match["body"])
        blocks.append(Block(line, language, language in RUNNERS and SKIP not in words[1:], code))
    return blocks


def _page_param(page: Path) -> object:
    marks = [pytest.mark.slow] if SLOW_MARKER in page.read_text() else []
    return pytest.param(page, id=page.relative_to(ROOT).as_posix(), marks=marks)


def _environment() -> dict[str, str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.update({"MPLBACKEND": "Agg", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"})
    env.pop("RAY_ADDRESS", None)  # each block gets an embedded Ray, as on a reader's machine
    return env


def test_fences_are_parsed() -> None:
    text = "a\n```bash\necho 1\n```\n- item\n  ```python no-run\n  x = 1\n  ```\n```text\nout\n```\n```\nbare\n```\n"
    blocks = code_blocks(text)
    assert [(b.line, b.language, b.runs) for b in blocks] == [
        (2, "bash", True),
        (6, "python", False),
        (9, "text", False),
        (12, "", False),
    ]
    assert blocks[1].code == "x = 1\n"


@pytest.mark.timeout(PAGE_TIMEOUT)
@pytest.mark.parametrize("page", [_page_param(p) for p in PAGES])
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    blocks = [b for b in code_blocks(page.read_text()) if b.runs]
    if not blocks:
        pytest.skip(f"{page.name} has no runnable block")
    env = _environment()
    for block in blocks:
        run = subprocess.run(
            [*RUNNERS[block.language], block.code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
        if run.returncode != 0:
            pytest.fail(
                f"{page.relative_to(ROOT)}:{block.line}: {block.language} block exited {run.returncode}\n"
                f"--- block ---\n{block.code}--- stdout (tail) ---\n{run.stdout[-3000:]}\n"
                f"--- stderr (tail) ---\n{run.stderr[-3000:]}",
                pytrace=False,
            )
