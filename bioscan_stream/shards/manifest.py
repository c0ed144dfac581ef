"""The self-describing manifest `index.json` of a shard set (shard tasks -> **manifest** -> stream/verify).

LitData-style: a reader configures itself from this one file. It lists every shard per split with sample
count, bytes and sha256, totals per split (`read = written + rejected`), the vocabularies file, the
source metadata checksum, library versions and the conversion parameters. It is written last and
atomically, so its presence means the set is complete.
"""

from __future__ import annotations

import json
import platform
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bioscan_stream.shards.writer import ShardResult
from bioscan_stream.storage import open_url, put_file
from bioscan_stream.validate import Reject

__all__ = ["shard_entries", "split_totals", "library_versions", "write_json", "read_json", "put_via_local"]

_VERSIONED = ("bioscan-stream", "ray", "webdataset", "pyarrow", "numpy", "pillow")
#: Totals key for rejects whose split is unknown or missing (they belong to no partition).
NO_SPLIT = "<none>"


def shard_entries(results: Sequence[ShardResult], splits: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Per split (in `splits` order), its shards in number order with their counts, bytes and sha256."""
    entries: dict[str, dict[str, Any]] = {}
    for split in splits:
        mine = sorted((r for r in results if r.path.startswith(f"{split}/")), key=lambda r: r.path)
        shards = [
            {"path": r.path, "samples": r.info.samples, "bytes": r.info.bytes, "sha256": r.info.sha256} for r in mine
        ]
        entries[split] = {
            "samples": sum(s["samples"] for s in shards),
            "bytes": sum(s["bytes"] for s in shards),
            "shards": shards,
        }
    return entries


def split_totals(read: Mapping[str, int], written: Mapping[str, int], rejects: Sequence[Reject]) -> dict[str, Any]:
    """`{split: {read, written, rejected, rejected_by_reason}}`; raises if the counts do not add up.

    Rejects with no known split are counted under their split value (or `<none>`), with `written` 0.
    """
    by_split: Counter[str] = Counter()
    by_reason: dict[str, Counter[str]] = {}
    for reject in rejects:
        key = reject.split if reject.split else NO_SPLIT
        by_split[key] += 1
        by_reason.setdefault(key, Counter())[reject.reason] += 1
    totals: dict[str, Any] = {}
    for split in [*read, *(k for k in by_split if k not in read)]:
        n_read, n_written, n_rejected = read.get(split, by_split[split]), written.get(split, 0), by_split[split]
        if n_written + n_rejected != n_read:
            raise RuntimeError(f"split {split!r}: written {n_written} + rejected {n_rejected} != read {n_read}")
        entry = {
            "read": n_read,
            "written": n_written,
            "rejected": n_rejected,
            "rejected_by_reason": dict(sorted(by_reason.get(split, Counter()).items())),
        }
        totals[split] = entry
    return totals


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that decide the shards' bytes and readers."""
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


def write_json(url: str, data: Any) -> None:
    """Write JSON to a local path or S3 URL atomically (sorted nothing: insertion order is the layout)."""
    with open_url(url, "wb") as out:
        out.write(json.dumps(data, indent=1, ensure_ascii=False).encode("utf-8"))


def read_json(url: str) -> Any:
    with open_url(url, "rb") as src:
        return json.loads(src.read())


def put_via_local(write: Callable[[Path], object], url: str, name: str) -> None:
    """Run a local, atomic file writer (`RejectsReport.write`, `save_vocabularies`) and publish its file at `url`."""
    with tempfile.TemporaryDirectory(prefix="bioscan-manifest-") as tmp:
        local = Path(tmp, name)
        write(local)
        put_file(local, url)
