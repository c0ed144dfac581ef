"""storage: local and s3:// through one scheme table, against a real S3-compatible server on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers_net import DroppingProxy

from bioscan_stream import storage


def test_local_atomic_write_and_listing(tmp_path: Path) -> None:
    with storage.open_url(tmp_path / "a" / "x.tar", "wb") as f:
        f.write(b"abc")
        assert not (tmp_path / "a" / "x.tar").exists()  # only renamed into place on close
    assert storage.read_bytes(tmp_path / "a" / "x.tar") == b"abc"
    assert storage.list_urls(tmp_path, suffix=".tar") == [str(tmp_path / "a" / "x.tar")]
    assert storage.join_url("s3://b/p/", "x", "/y.tar") == "s3://b/p/x/y.tar"



def test_local_write_interrupted_by_an_error_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "keep.json").write_bytes(b"old")
    with pytest.raises(RuntimeError), storage.open_url(tmp_path / "keep.json", "wb") as f:
        f.write(b"partial")
        raise RuntimeError("killed mid-write")
    assert (tmp_path / "keep.json").read_bytes() == b"old"  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]  # and no staging file is left


@pytest.mark.s3
def test_s3_write_interrupted_by_an_error_uploads_nothing(s3_bucket: str) -> None:
    url = storage.join_url(s3_bucket, "index.json")
    with pytest.raises(RuntimeError), storage.open_url(url, "wb") as f:
        f.write(b"partial")
        raise RuntimeError("killed mid-write")
    assert not storage.url_exists(url)


@pytest.mark.s3
def test_s3_write_read_list_exists(s3_bucket: str, tmp_path: Path) -> None:
    url = storage.join_url(s3_bucket, "shards", "train-000000.tar")
    payload = bytes(range(256)) * 4000
    with storage.open_url(url, "wb") as f:
        f.write(payload)
    assert storage.url_exists(url) and not storage.url_exists(url + ".missing")
    assert storage.read_bytes(url) == payload
    assert storage.list_urls(storage.join_url(s3_bucket, "shards"), suffix=".tar") == [url]


@pytest.mark.s3
def test_s3_read_resumes_after_dropped_connection(
    s3_bucket: str, s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = storage.join_url(s3_bucket, "big.bin")
    payload = bytes(range(256)) * 8192  # 2 MiB
    with storage.open_url(url, "wb") as f:
        f.write(payload)
    proxy = DroppingProxy(int(s3_server.rsplit(":", 1)[1]), cut=300_000)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
    retries: list[int] = []
    reader = storage.S3Reader(url, on_retry=lambda u, attempt, e: retries.append(attempt))
    assert reader.read() == payload
    assert proxy.drops == 1 and retries == [1]
