"""One way for every benchmark to record a run: a JSON line with the date, the machine and its load average at
the start and end, appended to benchmarks/results/<name>.jsonl, so runs on different machines and days stay
comparable; and one way to summarise repeated runs (median and spread), which the dashboard's headlines need."""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

RESULTS_DIR = Path(__file__).parent / "results"
#: Libraries whose versions are recorded when the benchmark has imported them.
_LIBRARIES = ("numpy", "pyarrow", "PIL", "torch", "transformers", "webdataset", "ray", "litdata")
#: A headline needs at least this many runs: one run cannot show how far it can be trusted.
MIN_RUNS = 3


def load_1min() -> float:
    """The 1-minute load average: the machine is shared, and a loaded run reads slower."""
    return round(os.getloadavg()[0], 2)


#: The load when this benchmark process started (this module is imported first thing).
_LOAD_AT_START = load_1min()


def process_cpu() -> float:
    """User + system CPU seconds of this process: on a shared box CPU time does not count the neighbours."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class TreeCpu(threading.Thread):
    """Polls the CPU seconds of every descendant (a local Ray runtime: GCS, raylet, workers, the actors that Ray
    Data ends before the job returns), keeping each process's last reading: `seconds()` is their sum."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: dict[int, float] = {}
        self.kinds: dict[int, str] = {}
        self.done = threading.Event()

    def sample(self) -> None:
        for child in psutil.Process().children(recursive=True):
            try:
                times = child.cpu_times()
                self.seen[child.pid] = times.user + times.system
                if child.pid not in self.kinds:
                    self.kinds[child.pid] = _process_kind(child)
            except psutil.NoSuchProcess:
                continue

    def seconds_by_kind(self) -> dict[str, float]:
        """CPU seconds per kind of process: Ray workers (task and actor processes) and each daemon by name."""
        totals: dict[str, float] = {}
        for pid, seconds in self.seen.items():
            totals[self.kinds[pid]] = totals.get(self.kinds[pid], 0.0) + seconds
        return totals

    def run(self) -> None:
        while not self.done.wait(0.25):
            self.sample()

    def seconds(self) -> float:
        return sum(self.seen.values())


def _process_kind(process: psutil.Process) -> str:
    """ "ray_workers" for Ray's task/actor processes (titled `ray::...`, or still the default worker script), else
    the process name (raylet, gcs_server, python for Ray's agents)."""
    command = " ".join(process.cmdline()[:2])
    return "ray_workers" if command.startswith("ray::") or "default_worker.py" in command else process.name()


def machine_info() -> dict[str, Any]:
    """Cores, load, Python and the versions of the libraries this process has imported."""
    versions = {name: getattr(sys.modules[name], "__version__", "?") for name in _LIBRARIES if name in sys.modules}
    return {
        "cpus": os.cpu_count(),
        "load_1min": load_1min(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def spread(values: Sequence[float], *, loads: Sequence[Sequence[float]] | None = None) -> dict[str, Any]:
    """Median, min, max and every value of at least `MIN_RUNS` repeated runs (plus each run's load, if given).

    Raises:
        ValueError: fewer than `MIN_RUNS` values.
    """
    if len(values) < MIN_RUNS:
        raise ValueError(f"{len(values)} run(s): a median and spread need at least {MIN_RUNS}")
    summary: dict[str, Any] = {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }
    if loads is not None:
        summary["load_1min"] = [list(pair) for pair in loads]
    return summary


def spread_text(summary: dict[str, Any] | float) -> str:
    """`median [min-max]` of a `spread` as a ratio (`1.62x [1.48-1.71]`); a bare number (one run) as `1.62x`."""
    if isinstance(summary, dict):
        return f"{summary['median']:.2f}x [{summary['min']:.2f}-{summary['max']:.2f}]"
    return f"{summary:.2f}x"


def append_result(name: str, record: dict[str, Any]) -> Path:
    """Append `record` plus date, machine info and start/end load to results/<name>.jsonl; returns the file."""
    path = RESULTS_DIR / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    stamped = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), **record}
    stamped.setdefault("machine", machine_info())
    stamped.setdefault("load_1min_start_end", [_LOAD_AT_START, load_1min()])
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(stamped) + "\n")
    return path
