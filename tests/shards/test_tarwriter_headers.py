"""The tar writer's template headers are byte-identical to what `tarfile` writes for the same members."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from bioscan_stream.shards.tarwriter import _member, write_tar

pytestmark = pytest.mark.quick


def _reference(path: Path, samples: list[dict[str, bytes | str]]) -> bytes:
    """The same samples written member by member with `TarFile.addfile` (the writer's former path)."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            for ext, value in sample.items():
                if ext != "__key__":
                    payload = value.encode("utf-8") if isinstance(value, str) else value
                    tar.addfile(_member(f"{sample['__key__']}.{ext}", payload), io.BytesIO(payload))
    return path.read_bytes()


@pytest.mark.parametrize("n", [0, 1, 7, 40])
def test_identical_to_tarfile(tmp_path: Path, n: int) -> None:
    samples: list[dict[str, bytes | str]] = [
        {"__key__": f"BIOUG{i:05d}-2{i % 10}", "jpg": bytes(range(256)) * (i * 37 % 9), "dna.txt": "ACGTN" * i,
         "json": '{"species":"Megaselia \u00e9"}', "targets.json": "{}"}
        for i in range(n)
    ]  # fmt: skip
    samples += [{"__key__": "caf\u00e9\u4e2d", "jpg": b"x" * 512}] if n else []
    write_tar(tmp_path / "ours.tar", samples)
    assert (tmp_path / "ours.tar").read_bytes() == _reference(tmp_path / "ref.tar", samples)
