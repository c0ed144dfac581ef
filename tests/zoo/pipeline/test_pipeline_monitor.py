"""Peak memory of a stage (zoo/pipeline/monitor.py): child processes count, and the peak outlives the child."""

from __future__ import annotations

import subprocess
import sys

from zoo.pipeline.monitor import PeakMemory, tree_memory

#: A child that touches 300 MiB (bytearray writes every page), holds it for 1.5 s, then exits.
_CHILD = "import time; b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5)"


def test_a_child_process_memory_counts_toward_the_peak() -> None:
    alone = tree_memory()
    with PeakMemory(interval=0.05) as memory:
        subprocess.run([sys.executable, "-c", _CHILD], check=True)
    assert memory.peak >= alone + (250 << 20), (alone, memory.peak)
    assert tree_memory() < memory.peak - (200 << 20)  # the child is gone; the peak stays recorded
