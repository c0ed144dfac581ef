"""One URL scheme table for every byte the project reads or writes: local paths and `s3://bucket/key`.

S3-compatible endpoints come from the standard AWS environment (`AWS_ENDPOINT_URL_S3` or
`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`), exactly as the AWS
CLI reads them, so a shard set moves between a laptop, MinIO/Ceph and AWS without code changes.
Reads of S3 objects resume from the last byte delivered after a transient error (a ranged GET), so a
dropped connection neither loses nor repeats data. Credentials are never logged.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from bioscan_stream._atomic import atomic_path, staging_path

__all__ = [
    "is_s3",
    "split_s3_url",
    "join_url",
    "s3_client",
    "open_url",
    "read_bytes",
    "put_file",
    "list_urls",
    "url_exists",
    "remove_url",
    "RetryPolicy",
]

log = logging.getLogger(__name__)


class RetryPolicy:
    """Exponential backoff for transient object-storage errors: `attempts` tries, `base * 2**i` seconds apart."""

    def __init__(self, attempts: int = 6, base: float = 0.2, cap: float = 5.0) -> None:
        self.attempts, self.base, self.cap = attempts, base, cap

    def delays(self) -> Iterator[float]:
        for i in range(self.attempts - 1):
            yield min(self.cap, self.base * 2**i)


def is_s3(url: str) -> bool:
    return str(url).startswith("s3://")


def split_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> (`bucket`, `a/b`)."""
    if not is_s3(url):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url[5:].partition("/")
    if not bucket:
        raise ValueError(f"s3 URL without a bucket: {url!r}")
    return bucket, key


def join_url(base: str | os.PathLike[str], *parts: str) -> str:
    """Join path parts onto a local path or an s3:// URL."""
    base = str(base)
    if is_s3(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(base, *parts))


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


@lru_cache(maxsize=8)
def _client(endpoint: str | None, pid: int) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 8, "mode": "standard"}, s3={"addressing_style": "path"})
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


def s3_client() -> Any:
    """A boto3 S3 client for the configured endpoint, one per process (clients are not fork-safe)."""
    return _client(_endpoint(), os.getpid())


def _transient_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError
    from urllib3.exceptions import ProtocolError

    # IncompleteReadError is what a connection dropped mid-body raises (seen against moto, 2026-11).
    return (
        BotoConnectionError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
        ProtocolError,
        ConnectionError,
        OSError,
    )


class S3Reader(io.RawIOBase):
    """A readable stream over one S3 object that resumes with a ranged GET after a transient error.

    The byte position is tracked on delivery, so a retry continues exactly where the caller is:
    nothing is lost or read twice. `on_retry(url, attempt, error)` lets callers count retries.
    """

    def __init__(
        self,
        url: str,
        *,
        policy: RetryPolicy | None = None,
        on_retry: Callable[[str, int, BaseException], None] | None = None,
    ) -> None:
        self.url = url
        self._bucket, self._key = split_s3_url(url)
        self._policy = policy or RetryPolicy()
        self._on_retry = on_retry
        self._pos = 0
        self._body: Any = None
        self._size: int | None = None

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        extra = {"Range": f"bytes={self._pos}-"} if self._pos else {}
        response = s3_client().get_object(Bucket=self._bucket, Key=self._key, **extra)
        if self._size is None:
            self._size = int(response["ContentLength"]) + self._pos
        self._body = response["Body"]

    def readinto(self, buffer: Any) -> int:  # type: ignore[override]
        if self._size is not None and self._pos >= self._size:
            return 0
        errors = _transient_errors()
        delays = self._policy.delays()
        attempt = 0
        while True:
            try:
                if self._body is None:
                    self._open()
                data = self._body.read(len(buffer))
                if not data and self._size is not None and self._pos < self._size:
                    raise ConnectionError(f"{self.url}: stream ended at byte {self._pos} of {self._size}")
                break
            except errors as error:  # transient: reopen at the current position after a backoff
                attempt += 1
                delay = next(delays, None)
                if delay is None:
                    raise OSError(f"{self.url}: giving up after {attempt} attempts at byte {self._pos}") from error
                log.warning("retrying %s at byte %d (attempt %d): %s", self.url, self._pos, attempt, error)
                if self._on_retry is not None:
                    self._on_retry(self.url, attempt, error)
                self._body = None
                time.sleep(delay)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None
        super().close()


class _StagedWriter(io.BufferedWriter):
    """Writes to a staging file and commits it (rename, or one S3 PUT) on a clean close.

    Leaving a `with` block by an exception discards the staging file instead, so a failed write never
    leaves an object or file that looks finished. S3 PUTs are atomic: readers never see a partial object.
    """

    def __init__(self, staging: str | os.PathLike[str], commit: Callable[[str], None], *, sync: bool) -> None:
        self._staging, self._commit, self._sync = str(staging), commit, sync
        super().__init__(io.FileIO(self._staging, "wb"))

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._commit = None  # type: ignore[assignment]
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.flush()
            if self._sync and self._commit is not None:
                os.fsync(self.fileno())
            super().close()
            if self._commit is not None:
                self._commit(self._staging)
        finally:
            Path(self._staging).unlink(missing_ok=True)


def _local_writer(path: str, *, durable: bool) -> _StagedWriter:
    staging = staging_path(path)
    return _StagedWriter(staging, lambda tmp: os.replace(tmp, path), sync=durable)


def _s3_writer(url: str) -> _StagedWriter:
    handle, staging = tempfile.mkstemp(prefix="bioscan-upload-")
    os.close(handle)
    return _StagedWriter(staging, lambda tmp: put_file(tmp, url), sync=False)


def open_url(url: str | os.PathLike[str], mode: str = "rb", *, durable: bool = True) -> IO[bytes]:
    """Open a local path or s3:// URL for binary reading ("rb") or atomic writing ("wb").

    A local write is fsynced before its rename unless `durable=False`: for files whose loss or truncation
    by a power cut is detected and repaired anyway (the conversion journal, checked against its shard's
    sha256). On ext4 such an fsync also waits for every earlier write of the file system to reach disk.
    """
    url = str(url)
    if mode not in ("rb", "wb"):
        raise ValueError(f"mode must be 'rb' or 'wb', not {mode!r}")
    if is_s3(url):
        return io.BufferedReader(S3Reader(url), buffer_size=1 << 20) if mode == "rb" else _s3_writer(url)
    if mode == "rb":
        return open(url, "rb")
    return _local_writer(url, durable=durable)


def read_bytes(url: str | os.PathLike[str]) -> bytes:
    with open_url(url, "rb") as f:
        return f.read()


def put_file(local: str | os.PathLike[str], url: str | os.PathLike[str]) -> None:
    """Copy a finished local file to `url` atomically (rename locally; a single PUT/multipart upload on S3)."""
    url = str(url)
    if is_s3(url):
        bucket, key = split_s3_url(url)
        s3_client().upload_file(str(local), bucket, key)
        return
    with atomic_path(url) as tmp:
        shutil.copyfile(local, tmp)


def list_urls(prefix: str | os.PathLike[str], *, suffix: str = "") -> list[str]:
    """Sorted URLs of the objects/files under `prefix` (recursive) whose names end with `suffix`."""
    prefix = str(prefix)
    if not is_s3(prefix):
        root = Path(prefix)
        return sorted(str(p) for p in root.rglob(f"*{suffix}") if p.is_file() and not p.name.startswith("."))
    bucket, key = split_s3_url(prefix)
    key = key.rstrip("/") + "/" if key else ""
    urls: list[str] = []
    for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        urls += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", []) if o["Key"].endswith(suffix)]
    return sorted(urls)


def url_exists(url: str | os.PathLike[str]) -> bool:
    url = str(url)
    if not is_s3(url):
        return Path(url).exists()
    from botocore.exceptions import ClientError

    bucket, key = split_s3_url(url)
    try:
        s3_client().head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def remove_url(url: str | os.PathLike[str]) -> None:
    """Delete a local file or an S3 object (absent is fine)."""
    url = str(url)
    if not is_s3(url):
        Path(url).unlink(missing_ok=True)
        return
    bucket, key = split_s3_url(url)
    s3_client().delete_object(Bucket=bucket, Key=key)
