"""glibc malloc policies (bioscan_stream.malloc): what glibc does with freed blocks under each policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from bioscan_stream.malloc import FORWARD, STREAM, MallocPolicy, tune_malloc
from zoo.embedding import EmbedConfig

glibc = pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only")

#: Allocates and frees a 100 MB block (the size of a resnet18 batch's conv1 output), then reports how much of it
#: the process still holds.
_PROBE = textwrap.dedent(
    """
    import json, threading
    import numpy as np
    from bioscan_stream.malloc import FORWARD, tune_malloc

    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * 4096

    def probe(out):
        block = np.ones(100_000_000 // 8)
        before = rss()
        del block
        out["kept_mb"] = (rss() - before + 100_000_000) / 1e6

    if {tune}:
        tune_malloc(FORWARD, environ=False)
    out = {{}}
    thread = threading.Thread(target=probe, args=(out,)) if {thread} else None
    thread.start() if thread else probe(out)
    thread.join() if thread else None
    print(json.dumps(out))
    """
)


def _probe(*, tune: bool = False, thread: bool = False, env: dict[str, str] | None = None) -> dict[str, float]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | (env or {})
    code = _PROBE.format(tune=tune, thread=thread)
    done = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


@glibc
def test_defaults_return_a_freed_large_block_and_forward_keeps_it() -> None:
    default = _probe()
    assert default["kept_mb"] < 10  # mmapped on its own, unmapped on free
    tuned = _probe(tune=True)
    assert tuned["kept_mb"] > 90  # the heap keeps it for the next batch


@glibc
def test_a_worker_thread_needs_the_policy_in_its_environment() -> None:
    """A second thread gets its own arena, where mallopt cannot stop a 100 MB block being mmapped; the
    environment at process start (as a Ray replica's runtime_env sets it) can."""
    assert _probe(tune=True, thread=True)["kept_mb"] < 10
    assert _probe(thread=True, env=FORWARD.environment())["kept_mb"] > 90


def test_policies_as_environment_variables() -> None:
    assert STREAM.environment() == {"MALLOC_MMAP_THRESHOLD_": str(4 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20)}
    assert FORWARD.environment() == {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1),
                                     "MALLOC_ARENA_MAX": "1"}  # fmt: skip
    assert MallocPolicy(mmap_threshold=1 << 20, trim_threshold=0).environment()["MALLOC_MMAP_THRESHOLD_"] == "1048576"


@glibc
def test_tune_malloc_sets_the_environment_for_later_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in STREAM.environment():
        monkeypatch.delenv(name, raising=False)
    assert tune_malloc(STREAM)
    assert {name: os.environ[name] for name in STREAM.environment()} == STREAM.environment()


def test_embedding_replicas_start_with_the_forward_policy() -> None:
    config = EmbedConfig("shards", "store", "kmer_freq_k5", task_env=(("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),))
    assert config.replica_env["env_vars"] == FORWARD.environment() | {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}
    assert config.runtime_env == {"env_vars": {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}}
