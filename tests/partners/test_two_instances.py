"""Two hotlines running this software exchange a report and its fate, with nothing between
them but their partner APIs.

A home hotline (Ukraine) and the partner hotline of Poland run side by side on 127.0.0.1,
each a whole ``hotline serve`` (API, worker, beat) with its own database (a PostgreSQL
schema of its own, or a SQLite file) and data directory (its own filesystem broker, so
neither takes the other's tasks). They are paired through the CLI only, as two admins
would do it (docs/partners.md). A synthetic picture served from 127.0.0.1 stands in for a
site in Poland (``HOTLINE_HOSTING_OVERRIDES``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pyotp
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import PG_SCHEMA, REPO, TEST_DATABASE_URL, WORKER_LOGS, free_port, wait_for
from tests.fixtures import images
from tests.fixtures.audit import drop_schema
from tests.fixtures.servers import LocalHTTPServer

pytestmark = pytest.mark.worker

T = TypeVar("T")
POSTGRES = TEST_DATABASE_URL.startswith("postgresql")
SECRET_LINE = re.compile(r"^\s+(.+?): (\S+)$")
# The labels `hotline partners add` prints its three secrets under.
OUR_SIGNING = "signing secret (we sign deliveries; give it to the partner)"
PARTNER_API_KEY = "partner's API key (it sends it to our API)"


@dataclass
class Instance:
    """One hotline: its settings, its ``hotline serve`` process, its CLI and staff API."""

    name: str
    country: str
    data_dir: Path
    port: int
    database_url: str
    log: Path
    process: subprocess.Popen[bytes] | None = None
    token: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook(self) -> str:
        return f"{self.base}/api/v1/partner/webhook"

    def settings(self) -> dict[str, str]:
        outside = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
        return outside | {
            "HOTLINE_DATA_DIR": str(self.data_dir),
            "HOTLINE_DATABASE_URL": self.database_url,
            "HOTLINE_SITE_NAME": self.name,
            "HOTLINE_HOME_COUNTRY": self.country,
            "HOTLINE_SECOND_OPINION": "none",
            "HOTLINE_RATE_LIMIT": "off",
            "HOTLINE_SECURE_COOKIES": "false",
            "HOTLINE_LOG_LEVEL": "INFO",
            "HOTLINE_WORKER_CONCURRENCY": "2",
            "HOTLINE_FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
            "HOTLINE_FETCH_PORTS": "1024-65535",
            "HOTLINE_FETCH_TOTAL_TIMEOUT_SECONDS": "10",
            # The picture on 127.0.0.1 stands in for a site hosted in Poland.
            "HOTLINE_HOSTING_OVERRIDES": "127.0.0.0/8=PL",
            # Beat's sweeps only back up what this test drives directly (deliveries are
            # sent on commit, the re-check is asked for). Kept sparse: kombu's filesystem
            # broker can hand a worker a message file that beat is still writing, which
            # stops the worker (seen with four sweeps a second).
            "HOTLINE_SWEEP_INTERVAL_SECONDS": "10",
            "HOTLINE_RECHECK_INTERVAL_SECONDS": "10",
            "HOTLINE_DELIVERY_RETRY_BASE_SECONDS": "1",
            "HOTLINE_DELIVERY_RETRY_MAX_DELAY_SECONDS": "2",
            "HOTLINE_DELIVERY_TIMEOUT_SECONDS": "5",
            "HOTLINE_PROCESS_RETRY_DELAY_SECONDS": "0.5",
            "HOTLINE_NEARDUP_REFRESH_SECONDS": "0.5",
        }

    def start(self) -> None:
        WORKER_LOGS.append(self.log)  # the content audit reads what its processes logged
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "hotline.cli", "serve"),
                    *("--host", "127.0.0.1", "--port", str(self.port)),
                    *("--data-dir", str(self.data_dir)),
                ],
                env=self.settings(),
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def healthy(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, f"{self.name} stopped: see {self.log}"
        try:
            return httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "hotline.cli", *args],
            env=self.settings(),
            cwd=REPO,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{self.name} {args[:2]}: {done.stderr[-2000:]}"
        return done.stdout

    def sign_in(self, email: str) -> None:
        """A staff account made with the CLI signs in through the API with its TOTP."""
        password = secrets.token_urlsafe(18)
        shown = self.cli(
            "users", "add", email, "--role", "analyst", "--password-stdin", "--print-totp-uri",
            stdin=password + "\n",
        )  # fmt: skip
        uri = next(line for line in shown.splitlines() if line.startswith("otpauth://"))
        answer = httpx.post(
            f"{self.base}/api/v1/auth/token",
            json={"email": email, "password": password, "totp": pyotp.parse_uri(uri).now()},
        )
        assert answer.status_code == 200, answer.text
        self.token = answer.json()["access_token"]

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.request(method, f"{self.base}{path}", headers=headers, timeout=10, **kwargs)


def issued_secrets(output: str) -> dict[str, str]:
    """The secrets `hotline partners add` printed, by their label."""
    found = {}
    for line in output.splitlines():
        match = SECRET_LINE.match(line)
        if match and match.group(2).startswith(("whsec_", "hpk_")):
            found[match.group(1)] = match.group(2)
    return found


def both(first: Callable[[], T], second: Callable[[], T]) -> tuple[T, T]:
    """Run a step on both sides at once, as two admins would (and in half the time)."""
    with ThreadPoolExecutor(2) as pool:
        one, two = pool.submit(first), pool.submit(second)
        return one.result(), two.result()


def pair(home: Instance, peer: Instance) -> None:
    """The pairing of docs/partners.md, step by step, with the CLI of each side: each adds
    the other and hands over the signing secret and the API key it printed."""

    def add(this: Instance, other: Instance) -> dict[str, str]:
        return issued_secrets(
            this.cli(
                "partners", "add", other.name, "--kind", "hotline", "--country", other.country,
                "--webhook", other.webhook, "--may-submit",
            )
        )  # fmt: skip

    at_home, at_peer = both(lambda: add(home, peer), lambda: add(peer, home))

    def accept(this: Instance, other: Instance, given: dict[str, str]) -> str:
        handed_over = f"{given[OUR_SIGNING]}\n{given[PARTNER_API_KEY]}\n"
        return this.cli(
            "partners", "accept-secrets", other.name, "--overlap-hours", "0", stdin=handed_over
        )

    both(lambda: accept(home, peer, at_peer), lambda: accept(peer, home, at_home))


@contextlib.contextmanager
def database(name: str, data_dir: Path) -> Iterator[str]:
    """A database of the instance's own: a PostgreSQL schema, or a SQLite file."""
    if not POSTGRES:
        yield f"sqlite:///{data_dir / 'hotline.sqlite3'}"
        return
    schema = f"{PG_SCHEMA}_{name}"
    admin = create_engine(TEST_DATABASE_URL)
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    joiner = "&" if "?" in TEST_DATABASE_URL else "?"
    try:
        yield f"{TEST_DATABASE_URL}{joiner}options=-csearch_path%3D{schema}"
    finally:
        drop_schema(admin, schema)  # searched by the content audit first
        admin.dispose()


def stop_all(instances: list[Instance]) -> None:
    """SIGTERM to each at once, then the wait: half the time of one by one."""
    with ThreadPoolExecutor(max(1, len(instances))) as pool:
        for done in [pool.submit(instance.stop) for instance in instances]:
            done.result()


@pytest.fixture
def hotlines(tmp_path: Path) -> Iterator[tuple[Instance, Instance]]:
    """The home hotline (UA) and the partner hotline of Poland, both serving."""
    with contextlib.ExitStack() as stack:
        made: list[Instance] = []
        stack.callback(stop_all, made)
        for name, country in (("Hotline UA", "UA"), ("Dyzurnet PL", "PL")):
            data_dir = (tmp_path / country.lower()).resolve()
            data_dir.mkdir()
            url = stack.enter_context(database(country.lower(), data_dir))
            instance = Instance(
                name, country, data_dir, free_port(), url, tmp_path / f"{country.lower()}.log"
            )
            instance.start()
            made.append(instance)
        for instance in made:
            wait_for(instance.healthy, timeout=60, interval=0.2)
        yield made[0], made[1]


def confirm_next(instance: Instance) -> dict[str, Any]:
    """An analyst of ``instance`` claims the item waiting in the queue and confirms its
    picture (baseline), as the workspace does."""
    wait_for(lambda: instance.api("GET", "/api/v1/queue").json()["items"], timeout=30)
    claimed = instance.api("POST", "/api/v1/queue/claim")
    assert claimed.status_code == 200, claimed.text
    target_id = claimed.json()["id"]
    item = instance.api("GET", f"/api/v1/targets/{target_id}").json()
    (media,) = item["media"]
    verdict = instance.api(
        "POST",
        f"/api/v1/targets/{target_id}/assessments",
        json={"items": [{"media_id": media["id"], "classification": "baseline"}]},
    )
    assert verdict.status_code == 200, verdict.text
    return dict(instance.api("GET", f"/api/v1/targets/{target_id}").json())


def test_a_report_confirmed_at_home_reaches_the_partner_hotline_and_its_removal_comes_back(
    hotlines: tuple[Instance, Instance], http_server: LocalHTTPServer
) -> None:
    home, poland = hotlines
    pair(home, poland)
    both(
        lambda: home.sign_in("analyst@hotline.ua.test"),
        lambda: poland.sign_in("analyst@dyzurnet.pl.test"),
    )
    picture = http_server.route("/gallery/p.jpg", body=images.jpeg(17, marker=images.new_marker()))

    # At home: a public report, processed by the worker, confirmed by an analyst.
    report = {"url": picture, "category": "csam"}
    assert httpx.post(f"{home.base}/api/v1/reports", json=report).status_code == 202
    at_home = confirm_next(home)
    assert at_home["hosting"]["country"] == "PL"
    home_id = at_home["id"]

    # Routing forwards it to the Polish hotline, whose webhook takes it.
    def forwarding() -> dict[str, Any]:
        rows = home.api("GET", f"/api/v1/targets/{home_id}/forwardings").json()
        assert len(rows) <= 1
        return dict(rows[0]) if rows else {"state": None}

    wait_for(lambda: forwarding()["state"] not in (None, "pending"), timeout=20)
    sent = forwarding()
    assert (sent["partner"], sent["rule"]) == (poland.name, "abroad.hotline")
    assert sent["state"] == "delivered"

    # In Poland: a partner report, processed like any report, confirmed by its analyst.
    in_poland = confirm_next(poland)
    assert in_poland["canonical_url"] == picture
    assert [r["source"] for r in in_poland["reports"]] == ["partner"]
    assert in_poland["hosting"]["country"] == "PL"
    # Confirmed there: the home hotline hears that the partner took it up.
    wait_for(lambda: forwarding()["state"] == "acknowledged", timeout=20)
    assert forwarding()["partner_status"] is None

    # The site takes the picture down; the Polish hotline's re-check sees it gone ...
    del http_server.routes["/gallery/p.jpg"]
    checked = poland.cli("partners", "recheck", str(in_poland["id"]))
    assert "removed" in checked
    removed_there = dt.datetime.fromisoformat(
        poland.api("GET", f"/api/v1/targets/{in_poland['id']}").json()["removed_at"]
    )

    # ... and its "content removed" flows back and sets removed_at at home.
    wait_for(lambda: forwarding()["partner_status"] == "content_removed", timeout=20)
    shown = home.api("GET", f"/api/v1/targets/{home_id}").json()
    assert shown["status"] == "removed"
    assert dt.datetime.fromisoformat(shown["removed_at"]) == removed_there
    assert dt.datetime.fromisoformat(forwarding()["partner_status_at"]) == removed_there
