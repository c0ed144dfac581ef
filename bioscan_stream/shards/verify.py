"""Re-check a shard set against its manifest (shards -> **verify**; run before publishing or after a copy).

Every shard listed in `index.json` is read once, streaming: its sha256 and byte size are recomputed and
its samples counted from the tar itself (consecutive members sharing a key form one sample, as WebDataset
groups them). Then the per-split sums are checked against the totals and `read = written + rejected`,
and the rejects file against its recorded count. Every problem names the shard or split it concerns.
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass, field
from typing import IO, Any

from bioscan_stream.schema import INDEX_FILE
from bioscan_stream.shards.manifest import read_json
from bioscan_stream.storage import join_url, list_urls, open_url, url_exists

__all__ = ["VerifyReport", "find_shard_sets", "verify_shards"]

_CHUNK = 1 << 20


@dataclass
class VerifyReport:
    """Outcome of `verify_shards`: what was checked and every problem found (empty = valid)."""

    url: str
    shards: int = 0
    samples: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _HashingReader:
    """Read-through wrapper that hashes and counts every byte `tarfile` consumes."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw, self.sha256, self.size = raw, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.sha256.update(data)
        self.size += len(data)
        return data


def _scan(url: str) -> tuple[str, int, int]:
    """(sha256, bytes, samples) of one tar, in a single streaming pass."""
    with open_url(url, "rb") as raw:
        reader = _HashingReader(raw)
        samples, previous = 0, None
        with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                key = member.name.rsplit("/", 1)[-1].split(".", 1)[0]
                samples += key != previous
                previous = key
        while reader.read(_CHUNK):  # tar end-of-archive padding still counts in the hash
            pass
    return reader.sha256.hexdigest(), reader.size, samples


def _check_shard(base: str, shard: dict[str, Any], report: VerifyReport) -> int:
    """Problems of one shard go into `report`; returns the samples counted in the tar."""
    url = join_url(base, shard["path"])
    if not url_exists(url):
        report.problems.append(f"shard {shard['path']}: missing ({url})")
        return 0
    try:
        sha, size, samples = _scan(url)
    except (tarfile.TarError, OSError) as error:
        report.problems.append(f"shard {shard['path']}: unreadable tar: {error}")
        return 0
    if sha != shard["sha256"]:
        report.problems.append(f"shard {shard['path']}: sha256 {sha} != manifest {shard['sha256']}")
    if size != shard["bytes"]:
        report.problems.append(f"shard {shard['path']}: {size} bytes != manifest {shard['bytes']}")
    if samples != shard["samples"]:
        report.problems.append(f"shard {shard['path']}: {samples} samples in the tar != manifest {shard['samples']}")
    report.shards, report.bytes = report.shards + 1, report.bytes + size
    return samples


def _check_totals(manifest: dict[str, Any], counted: dict[str, int], report: VerifyReport) -> None:
    for split, total in manifest.get("totals", {}).items():
        written = total.get("written", total.get("samples"))
        if split in counted and written != counted[split]:
            report.problems.append(f"split {split}: totals say {written} samples, its shards hold {counted[split]}")
        if "read" in total and total["written"] + total["rejected"] != total["read"]:
            report.problems.append(
                f"split {split}: written {total['written']} + rejected {total['rejected']} != read {total['read']}"
            )
        merged = total.get("samples", 0) + total.get("duplicates", 0) + total.get("empty_after_strip", 0)
        if "records" in total and merged != total["records"]:
            report.problems.append(
                f"split {split}: samples + duplicates + empty = {merged} != records {total['records']}"
            )


def _check_rejects(base: str, manifest: dict[str, Any], report: VerifyReport) -> None:
    entry = manifest.get("rejects")
    if not entry:
        return
    url = join_url(base, entry["file"])
    if not url_exists(url):
        report.problems.append(f"rejects file {url} is missing")
        return
    with open_url(url, "rb") as src:
        lines = sum(1 for line in src.read().splitlines() if line.strip())
    if lines != entry["count"]:
        report.problems.append(f"rejects file {url}: {lines} lines != manifest count {entry['count']}")


def _is_shard_manifest(manifest: Any) -> bool:
    """A shard set's manifest lists shards per split; embedding stores and FAISS indices also write `index.json`."""
    splits = manifest.get("splits") if isinstance(manifest, dict) else None
    return isinstance(splits, dict) and all(isinstance(entry, dict) and "shards" in entry for entry in splits.values())


def find_shard_sets(url: str) -> list[str]:
    """The shard-set folders at or under `url`, sorted: `bioscan-stream shards OUT` writes one per package plus `dna`,
    so `OUT` itself holds no manifest."""
    if url_exists(join_url(url, INDEX_FILE)):
        return [url]
    manifests = list_urls(url, suffix=f"/{INDEX_FILE}")
    return [m[: -len(INDEX_FILE) - 1] for m in manifests if _is_shard_manifest(read_json(m))]


def verify_shards(url: str) -> VerifyReport:
    """Verify the shard set whose `index.json` lies in `url` (a local folder or `s3://` prefix)."""
    report = VerifyReport(url=url)
    index = join_url(url, INDEX_FILE)
    if not url_exists(index):
        report.problems.append(f"no manifest {index}: not a shard set, or its conversion did not finish")
        return report
    manifest = read_json(index)
    counted: dict[str, int] = {}
    for split, entry in manifest["splits"].items():
        counted[split] = sum(_check_shard(url, shard, report) for shard in entry["shards"])
        if counted[split] != entry["samples"]:
            report.problems.append(
                f"split {split}: manifest says {entry['samples']} samples, shards hold {counted[split]}"
            )
    report.samples = sum(counted.values())
    _check_totals(manifest, counted, report)
    _check_rejects(url, manifest, report)
    return report
