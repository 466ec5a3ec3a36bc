"""Hostile targets through a real worker process on the test broker and database: each
ends with its reason code on the target, nothing reaches the address it must not, and
the worker lives on. (The guard's own table of refused addresses and spellings, with a
resolver the tests control, is tests/triage/test_fetcher.py.)

The worker may fetch from 127.0.0.2 only (``HOTLINE_FETCH_ALLOW_NETWORKS``); the intake
of the tests accepts all of 127.0.0.0/8, so targets on 127.0.0.1 reach the worker and
are refused there. A counting listener on 127.0.0.1 stands where no connection may go:
the redirects point at it, and so do the proxy variables the worker is started with.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from reporting.models import Target, TargetStatus
from tests.conftest import wait_for
from tests.fixtures import images
from tests.fixtures.servers import (
    CountingListener,
    LocalHTTPServer,
    Route,
    drip,
    endless,
    gzip_bomb,
    redirect,
)
from tests.triage.test_tasks import submit, target_of
from triage.models import Media, Sighting

pytestmark = pytest.mark.worker

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")


def test_hostile_targets_end_with_their_reason_codes_and_the_worker_lives_on(
    client: Any,
    committed: Engine,
    start_worker: Callable[..., subprocess.Popen[bytes]],
    counting_listener: CountingListener,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    trap = f"127.0.0.1:{counting_listener.port}"
    with LocalHTTPServer("127.0.0.2") as site:
        expected: dict[str, tuple[TargetStatus, str | None]] = {}

        def hostile(path: str, route: Any, status: TargetStatus, reason: str | None) -> None:
            expected[site.add(path, route)] = (status, reason)

        blocked = (TargetStatus.unreachable, "redirect_blocked")
        hostile("/to-loopback", redirect(f"http://{trap}/x"), *blocked)
        hostile("/to-metadata", redirect("http://169.254.169.254/latest/meta-data/"), *blocked)
        hostile(
            "/to-mapped", redirect(f"http://[::ffff:127.0.0.1]:{counting_listener.port}/"), *blocked
        )
        hostile("/to-localhost", redirect(f"http://localhost:{counting_listener.port}/"), *blocked)
        hostile("/to-file", redirect("file:///etc/passwd"), *blocked)
        hostile("/to-gopher", redirect(f"gopher://{trap}/_x"), *blocked)
        hostile("/to-ftp", redirect(f"ftp://{trap}/x"), *blocked)
        hostile("/to-port-22", redirect("http://127.0.0.2:22/"), *blocked)
        for hop in range(6):
            site.add(f"/hop/{hop}", redirect(site.url(f"/hop/{hop + 1}")))
        site.route("/hop/6", body=images.jpeg(3, marker=images.new_marker()))
        expected[site.url("/hop/0")] = (TargetStatus.unreachable, "too_many_redirects")
        hostile("/drip", drip(1), TargetStatus.unreachable, "timeout")
        hostile("/endless", endless(), TargetStatus.unreachable, "too_large")
        bomb = {"Content-Type": "image/png", "Content-Encoding": "gzip"}
        hostile("/gzip-bomb", _route(gzip_bomb(), bomb), TargetStatus.unreachable, "too_large")
        png = images.huge_png_header(60_000, 60_000, marker=images.new_marker())
        hostile("/huge.png", _route(png), TargetStatus.queued, "image_too_large")
        gif = images.gif_with_frames(100_000, marker=images.new_marker())
        hostile("/frames.gif", _route(gif), TargetStatus.queued, "frames_capped")
        # Reported straight at addresses the worker may not reach.
        expected[f"http://{trap}/direct.jpg"] = (TargetStatus.unreachable, "blocked_address")
        expected[f"http://127.0.0.3:{site.port}/elsewhere.jpg"] = (
            TargetStatus.unreachable,
            "blocked_address",
        )
        # And one good picture, to show the worker fetches what it may.
        good = site.route("/good.jpg", body=images.jpeg(4, marker=images.new_marker()))
        expected[good] = (TargetStatus.queued, None)

        for name in PROXY_VARIABLES:  # the worker must ignore them
            monkeypatch.setenv(name, f"http://{trap}")
        worker = start_worker(
            concurrency=2,
            fetch_allow_networks="127.0.0.2/32",
            fetch_total_timeout_seconds="3",
        )
        for name in PROXY_VARIABLES:  # the test's own client is in-process
            monkeypatch.delenv(name)
        targets = {target_of(committed, submit(client, url)): url for url in expected}

        def ended() -> dict[str, tuple[TargetStatus, str | None]]:
            with Session(committed) as session:
                rows = session.execute(
                    select(col(Target.id), col(Target.status), col(Target.status_reason)).where(
                        col(Target.id).in_(targets)
                    )
                ).all()
            return {
                targets[target_id]: (status, reason)
                for target_id, status, reason in rows
                if status in (TargetStatus.queued, TargetStatus.unreachable)
            }

        # The drip is tried twice (a timeout is worth another attempt), 3 s each.
        wait_for(lambda: len(ended()) == len(expected), timeout=90, interval=0.5)
        assert ended() == expected
        assert counting_listener.count == 0

    with Session(committed) as session:
        notes = dict(
            session.execute(
                select(col(Sighting.media_url), col(Media.hash_note)).join(
                    Media, col(Media.id) == col(Sighting.media_id)
                )
            ).all()
        )
    assert notes == {
        site.url("/huge.png"): "image_too_large",
        site.url("/frames.gif"): "frames_capped",
        good: None,
    }
    assert worker.poll() is None, "the worker died"
    log = (tmp_path / "worker-0.log").read_text(errors="replace")
    for sign in ("Traceback", "WorkerLostError", "exited with", "internal_error"):
        assert sign not in log, f"{sign} in the worker's log"


def _route(body: bytes, headers: dict[str, str] | None = None) -> Route:
    return Route(status=200, headers=dict(headers or {}), body=body)
