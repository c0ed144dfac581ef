"""Shared test fixtures: paths to ../shared (tests that use it skip when it is absent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from helpers_ray import RayHead

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """../shared/fixtures, or skip the test when the checkout has no ../shared."""
    path = SHARED / "fixtures"
    if not path.is_dir():
        pytest.skip("../shared/fixtures is absent")
    return path


#: Records of the session's synthetic release (all 8 splits need 10-20k; see docs/synthetic.md).
SYNTH_SAMPLES = 20_000


@pytest.fixture(scope="session")
def release_20k(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    """A metadata-only synthetic 20k release (seed 0, ~8 s), written once per session: its root and table.

    Shared by the synth, zoo and job tests: treat the folder as read-only (link to it to add files).
    """
    from bioscan_stream.synth.release import write_release

    root = tmp_path_factory.mktemp("synth20k")
    return root, write_release(root, samples=SYNTH_SAMPLES, seed=0, images=False)


@pytest.fixture(scope="session")
def release_1m(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    """A synthetic BIOSCAN-1M release (~540 records of a 2,500-record 5M world, parts of 40 images, cropped_256
    as tree, zip and HDF5; ~8 s), written once per session: its root and table. Treat it as read-only."""
    from bioscan_stream.synth.release1m import write_release_1m

    root = tmp_path_factory.mktemp("synth1m")
    return root, write_release_1m(root, samples=2_500, seed=0, part_size=40, workers=2)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3-compatible server (moto) on 127.0.0.1 for the session; yields its endpoint URL.

    The standard AWS variables point every boto3 client of the test process (and its children) at it.
    """
    moto_server = pytest.importorskip("moto.server")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A fresh, empty bucket on the local S3 server; yields `s3://<bucket>`."""
    import uuid

    from bioscan_stream.storage import s3_client

    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """Fail the session if a test left child processes behind (a Ray head, a server, a worker pool)."""
    import time

    import psutil

    yield
    deadline = time.monotonic() + 20
    while (children := psutil.Process().children(recursive=True)) and time.monotonic() < deadline:
        time.sleep(0.5)
    alive = [f"{c.pid}:{' '.join(c.cmdline()[:3])}" for c in children if c.is_running()]
    assert not alive, f"tests left processes running: {alive}"


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    """`ray start --head --block` on free ports in its own process group, once per session (4-40 s to start here).

    Teardown sends Ctrl-C to the group (`--block` stops its node on it), then SIGKILL if it hangs.
    """
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    dashboard = _free_port()
    ports = {
        "--port": _free_port(), "--dashboard-port": dashboard, "--ray-client-server-port": _free_port(),
        "--dashboard-agent-listen-port": _free_port(), "--dashboard-agent-grpc-port": _free_port(),
        "--runtime-env-agent-port": _free_port(), "--metrics-export-port": _free_port(),
        "--node-manager-port": _free_port(), "--object-manager-port": _free_port(),
    }  # fmt: skip
    temp = Path("/tmp") / f"rayt{os.getpid()}"  # short: Ray's socket paths must stay under 107 bytes
    args = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--num-cpus=2"]
    args += [f"{k}={v}" for k, v in ports.items()]
    args += [f"--temp-dir={temp}", "--include-dashboard=true", "--dashboard-host=127.0.0.1"]
    head = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except OSError:
                assert head.poll() is None, head.stderr.read().decode() if head.stderr else "ray start exited"
                time.sleep(1)
        yield RayHead(address, env)
    finally:
        os.killpg(head.pid, signal.SIGINT)
        try:
            head.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        subprocess.run(["rm", "-rf", str(temp)], check=False)
