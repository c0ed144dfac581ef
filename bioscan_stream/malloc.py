"""glibc malloc policies for the two allocation patterns that dominate here: decoding and model forward passes.

On these VMs a page that a process maps fresh costs a fault and the hypervisor's first touch, and pages given
back to the kernel are handed back to the host (environment.md; docs/benchmarks.md). glibc's defaults
(`mmap` for blocks >= 128 KiB, `munmap` on free, heap trimmed above 128 KiB) then refault the same memory on
every batch:

- decoding (`STREAM`): image and batch buffers of a few MB. `MALLOC_MMAP_THRESHOLD_=4194304` and
  `MALLOC_TRIM_THRESHOLD_=67108864` doubled decode-to-numpy throughput (environment.md, 2026-11);
- forward passes (`FORWARD`): activations of 10-100 MB, freed and allocated again by every batch (a resnet18
  batch of 32 has a 103 MB conv1 output). Never `mmap`, never trim, one arena: one thread of resnet18 ran
  28-31 ms an image with glibc's defaults and 20-21 ms with this policy (2026-12-07, same inputs). The
  process keeps its peak heap, which a model replica reaches on every batch anyway.

One arena matters because glibc gives every thread after the first its own arena of 64 MB heaps, where a
larger block is mmapped whatever the settings, and an emptied heap is unmapped. Ray Data calls a map actor
from such a thread. The arena count can only be set before the process's threads start, so model replicas get
the policy as environment variables (`MallocPolicy.environment`, e.g. in a Ray `runtime_env`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass

__all__ = ["FORWARD", "STREAM", "MallocPolicy", "tune_malloc"]

#: glibc's `mallopt` parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4


@dataclass(frozen=True)
class MallocPolicy:
    """`mmap_threshold`: blocks at least this large are mmapped (None: never mmap); `trim_threshold`: free
    memory kept at the top of the heap before it is returned to the kernel; `arenas`: at most this many
    arenas (None: glibc's default, 8 per core), settable only through the environment."""

    mmap_threshold: int | None
    trim_threshold: int
    arenas: int | None = None

    def _mallopt(self) -> dict[int, tuple[str, int]]:
        """`mallopt` parameter -> (environment variable, value)."""
        mmap = (_M_MMAP_MAX, ("MALLOC_MMAP_MAX_", 0)) if self.mmap_threshold is None else (
            _M_MMAP_THRESHOLD, ("MALLOC_MMAP_THRESHOLD_", self.mmap_threshold))  # fmt: skip
        return dict([mmap, (_M_TRIM_THRESHOLD, ("MALLOC_TRIM_THRESHOLD_", self.trim_threshold))])

    def environment(self) -> dict[str, str]:
        """The policy as the environment variables glibc reads at a process's start."""
        env = {name: str(value) for name, value in self._mallopt().values()}
        return env | ({"MALLOC_ARENA_MAX": str(self.arenas)} if self.arenas else {})


STREAM = MallocPolicy(mmap_threshold=4 << 20, trim_threshold=64 << 20)
FORWARD = MallocPolicy(mmap_threshold=None, trim_threshold=2**31 - 1, arenas=1)  # mallopt takes a C int


def tune_malloc(policy: MallocPolicy = STREAM, *, environ: bool = True) -> bool:
    """Apply `policy`'s `mallopt` settings to this process (forked children inherit them) and, with `environ`,
    the whole policy to the environment of processes started later (spawned workers); False off glibc (macOS,
    musl), where nothing changes.

    Call it before starting threads: a thread that has allocated already keeps its own arena, untuned.
    """
    if environ:
        for name, value in policy.environment().items():
            os.environ.setdefault(name, value)
    library = ctypes.util.find_library("c")
    if library is None:
        return False
    libc = ctypes.CDLL(library)
    if not hasattr(libc, "mallopt"):
        return False
    return all(libc.mallopt(param, value) == 1 for param, (_, value) in policy._mallopt().items())
