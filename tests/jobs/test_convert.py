"""`jobs.convert` and `jobs.verify_shards`: in-process smoke runs, and one real `ray start` + `ray job submit`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers_release import PACKAGE, inject_faults, make_release

from jobs import convert, verify_shards

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One in-process run of the job (embedded Ray, 2 workers) on a release with four broken records."""
    tmp = tmp_path_factory.mktemp("convert-job")
    make_release(tmp / "release", samples=40)
    inject_faults(tmp / "release")
    code = convert.main(
        [str(tmp / "release"), str(tmp / "out"), "--workers", "2", "--shard-size", "64KB", "--no-progress"]
    )
    assert code == 0
    return tmp / "out"


def test_parse_size() -> None:
    assert convert.parse_size("128MB") == 128 << 20
    assert convert.parse_size("1.5 kb") == 1536
    assert convert.parse_size("4096") == 4096
    with pytest.raises(Exception, match="not a size"):
        convert.parse_size("lots")


def test_main_converts_and_verify_passes(converted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads((converted / PACKAGE / "index.json").read_text())
    assert manifest["parameters"]["shard_bytes"] == 64 << 10
    assert sum(t["rejected"] for t in manifest["totals"].values()) == 4
    assert verify_shards.main([str(converted / PACKAGE), str(converted / "dna")]) == 0
    assert "OK" in capsys.readouterr().out


def test_verify_names_a_bad_shard(converted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(converted / PACKAGE), str(copy)], check=True)
    shard = copy / "val" / "val-000001.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 1
    shard.write_bytes(bytes(data))
    assert verify_shards.main([str(copy)]) == 1
    err = capsys.readouterr().err
    assert "val/val-000001.tar" in err and "sha256" in err


def test_strict_job_fails_with_a_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_release(tmp_path / "release", samples=16)
    faults = inject_faults(tmp_path / "release")
    assert convert.main([str(tmp_path / "release"), str(tmp_path / "out"), "--strict", "--no-progress"]) == 1
    assert faults["bad_barcode"] in capsys.readouterr().err


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """`ray start --head --block` on free ports, in its own process group; yields (dashboard port, env)."""
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
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{dashboard}/api/version", timeout=2)
                break
            except OSError:
                assert head.poll() is None, head.stderr.read().decode() if head.stderr else "ray start exited"
                time.sleep(1)
        yield dashboard, env
    finally:
        os.killpg(head.pid, signal.SIGINT)  # `ray start --block` stops its node on Ctrl-C
        try:
            head.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        subprocess.run(["rm", "-rf", str(temp)], check=False)


def test_ray_job_submit_round_trip(ray_head: tuple[int, dict[str, str]], tmp_path: Path) -> None:
    dashboard, env = ray_head
    make_release(tmp_path / "release", samples=24)
    out = tmp_path / "out"
    submit = [str(Path(sys.executable).parent / "ray"), "job", "submit", f"--address=http://127.0.0.1:{dashboard}"]
    submit += ["--working-dir", str(REPO), "--", "python", "-m", "jobs.convert", str(tmp_path / "release"), str(out)]
    submit += ["--splits", "train", "val", "--no-progress"]
    done = subprocess.run(submit, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout
    manifest = json.loads((out / PACKAGE / "index.json").read_text())
    assert list(manifest["splits"]) == ["train", "val"]
    assert manifest["totals"]["train"]["written"] == 3
    assert verify_shards.main([str(out / PACKAGE)]) == 0
