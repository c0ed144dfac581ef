"""One way for every Ray job of the project to get a runtime (shards, embeddings, indices, training).

Reuse a runtime that is already up (a test's, or the driver of `ray job submit`), else connect to the cluster
at `address` (`auto` under `ray job submit`), else start an embedded local one; stop only what was started here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import ray

__all__ = ["ray_runtime"]


@contextmanager
def ray_runtime(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[None]:
    """Run the block with Ray initialised; see the module docstring for which runtime."""
    if ray.is_initialized():
        yield
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()
