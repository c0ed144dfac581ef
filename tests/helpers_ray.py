"""A Ray head node handle for the tests that submit real jobs (`ray_head` fixture in tests/conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

#: Left out of `ray job submit --working-dir` uploads besides what .gitignore names (caches of 100+ MB).
SUBMIT_EXCLUDES = (".git", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".import_linter_cache", "benchmarks")


class RayHead(NamedTuple):
    """A running `ray start --head` node: its dashboard address (for `ray job submit`) and the env to use."""

    address: str
    env: dict[str, str]

    def submit(
        self, command: list[str], *, working_dir: Path, timeout: float = 240, env_vars: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`ray job submit --working-dir DIR -- COMMAND`; waits for the job and returns its output.

        `env_vars` go into the job's runtime environment (the driver and its tasks; the CLI does not forward its own).
        """
        excludes = json.dumps({"excludes": list(SUBMIT_EXCLUDES), "env_vars": env_vars or {}})
        args = [str(Path(sys.executable).parent / "ray"), "job", "submit", f"--address={self.address}"]
        args += ["--working-dir", str(working_dir), "--runtime-env-json", excludes]
        return subprocess.run(
            [*args, "--", *command], env=self.env, cwd=working_dir, capture_output=True, text=True, timeout=timeout
        )
