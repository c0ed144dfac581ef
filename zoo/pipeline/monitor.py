"""Peak memory of a pipeline stage: the stage's process tree sampled while it runs (-> the report's table).

What counts: this process and all its descendants. With the embedded local Ray runtime the pipeline starts,
that is the whole of Ray on this node (GCS, raylet, dashboard agent and every worker are descendants of the
driver); on an external cluster (`RAY_ADDRESS`, `ray job submit`) it is the driver alone, since the workers
belong to the node's raylet. Each process is counted by its PSS (proportional set size: shared pages such as
torch's libraries or Ray's object store split between the processes that map them), so the sum is the memory
the tree holds, not the larger sum of RSS; where PSS cannot be read the RSS is used. Samples every 0.2 s, so
a peak shorter than that can be missed.
"""

from __future__ import annotations

import threading
from types import TracebackType

import psutil

__all__ = ["PeakMemory", "tree_memory"]

_INTERVAL = 0.2


def _memory(process: psutil.Process) -> int:
    try:
        return int(process.memory_full_info().pss)
    except (psutil.AccessDenied, AttributeError):
        try:
            return int(process.memory_info().rss)
        except psutil.Error:
            return 0
    except psutil.Error:  # gone between listing and reading
        return 0


def tree_memory(root: psutil.Process | None = None) -> int:
    """Bytes held by `root` (default: this process) and its descendants now (PSS, else RSS)."""
    root = root or psutil.Process()
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    return sum(_memory(p) for p in processes)


class PeakMemory:
    """Context manager: `peak` is the largest `tree_memory()` seen while the block ran (bytes)."""

    def __init__(self, interval: float = _INTERVAL) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self._root = psutil.Process()

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, tree_memory(self._root))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_memory(self._root))
