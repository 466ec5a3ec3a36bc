"""The embedded hotline as a new user runs it: ``hotline serve``, SQLite, filesystem broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port, wait_for
from tests.fixtures import images
from tests.fixtures.servers import LocalHTTPServer

pytestmark = pytest.mark.worker


def processes_using(data_dir: Path) -> list[int]:
    marker = f"HOTLINE_DATA_DIR={data_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def embedded_env() -> dict[str, str]:
    # A fresh machine: no HOTLINE_* settings, so SQLite and the filesystem broker; only
    # the fetcher is let onto the loopback server that stands in for a reported site.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    return env | {
        "HOTLINE_FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
        "HOTLINE_FETCH_PORTS": "1024-65535",
    }


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hotline.cli", "--data-dir", str(data_dir), *args],
        env=embedded_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_runs_the_whole_hotline_and_stops_cleanly(
    tmp_path: Path, stop_signal: int, http_server: LocalHTTPServer
) -> None:
    picture = http_server.route("/embedded.jpg", body=images.jpeg(9, marker=images.new_marker()))
    data_dir = (tmp_path / "data").resolve()
    port = free_port()
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hotline.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        env=embedded_env(),
        cwd=REPO,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, timeout=60, interval=0.2)
        response = httpx.post(
            f"{base}/api/v1/reports",
            json={"url": picture, "category": "csam"},
        )
        assert response.status_code == 202
        assert (data_dir / "hotline.sqlite3").exists()

        def status() -> str:
            shown = cli(data_dir, "targets", "show", "1", "--json")
            return str(json.loads(shown.stdout)["status"]) if shown.returncode == 0 else ""

        assert status() in {"pending", "fetching", "queued"}  # the worker may be at it
        wait_for(lambda: status() == "queued", timeout=30, interval=0.5)
        receipt = response.json()["receipt"]
        assert httpx.get(f"{base}/api/v1/reports/{receipt}").json() == {"status": "being_assessed"}
        assert len(processes_using(data_dir)) >= 4  # serve, api, worker (+ its pool), beat
    finally:
        serve.send_signal(stop_signal)
        code = serve.wait(timeout=40)
    assert code == 0
    wait_for(lambda: not processes_using(data_dir), timeout=10)


def test_cli_reports_missing_targets_clearly(tmp_path: Path) -> None:
    assert cli(tmp_path, "db", "upgrade").returncode == 0
    missing = cli(tmp_path, "targets", "show", "42")
    assert missing.returncode == 1
    assert "no matching target" in missing.stderr
    bad_status = cli(tmp_path, "targets", "list", "--status", "nonsense")
    assert bad_status.returncode == 2
    assert "unknown status" in bad_status.stderr
