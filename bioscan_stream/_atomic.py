"""Atomic file output shared by every writer in `bioscan_stream` (metadata, bbox, rejects reports).

A reader never sees a half-written file: output goes to a temporary sibling, which replaces the
target with `os.replace` only once it is complete; on error the temporary file is removed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def staging_path(path: str | os.PathLike[str]) -> Path:
    """The temporary sibling a writer fills before renaming it onto `path` (parent folder created).

    The name carries the pid so that concurrent writers of the same target (reruns, Ray retries) never
    clobber each other's partial output; it starts with a dot so listings of finished files skip it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` when the block succeeds.

    On error the temporary file is removed and `path` is left as it was.
    """
    target = Path(path)
    tmp = staging_path(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
