"""One way for every benchmark to record a run: a JSON line with the date and the machine, appended to
benchmarks/results/<name>.jsonl, so runs on different machines and days stay comparable."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"
#: Libraries whose versions are recorded when the benchmark has imported them.
_LIBRARIES = ("numpy", "pyarrow", "PIL", "torch", "transformers", "webdataset", "ray", "litdata")


def machine_info() -> dict[str, Any]:
    """Cores, load, Python and the versions of the libraries this process has imported."""
    versions = {name: getattr(sys.modules[name], "__version__", "?") for name in _LIBRARIES if name in sys.modules}
    return {
        "cpus": os.cpu_count(),
        "load_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def append_result(name: str, record: dict[str, Any]) -> Path:
    """Append `record` plus date and machine info to results/<name>.jsonl; returns the file."""
    path = RESULTS_DIR / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    stamped = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **record}
    stamped.setdefault("machine", machine_info())
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(stamped) + "\n")
    return path
