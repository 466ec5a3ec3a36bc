"""``hotline targets`` as an operator runs it: a separate process on the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hotline.db import utcnow
from reporting.models import ReportCategory, ReportSource, Target, TargetStatus
from reporting.schemas import ReportCreate
from reporting.service import submit_report
from tests.conftest import REPO

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(committed: Engine, backend_env: dict[str, str]) -> Run:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hotline.cli", "targets", *args],
            env={**os.environ, **backend_env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def seed(engine: Engine, url: str, **fields: object) -> int:
    with Session(engine) as session:
        _, report = submit_report(
            session,
            ReportCreate(url=url, category=ReportCategory.csam),
            source=ReportSource.api,
            now=utcnow(),
            max_url_length=4096,
        )
        target = session.get(Target, report.target_id)
        assert target is not None
        for name, value in fields.items():
            setattr(target, name, value)
        session.add(target)
        session.commit()
        return int(report.target_id)


def test_list_filters_as_an_operator_spells_them(cli: Run, committed: Engine) -> None:
    german = seed(
        committed,
        "https://www.bücher.de/a.jpg",
        status=TargetStatus.queued,
        priority=500,
        hosting_country="DE",
        hosting_org="Example Hosting GmbH",
    )
    timed_out = seed(
        committed,
        "https://slow.example.org/b.jpg",
        status=TargetStatus.unreachable,
        status_reason="timeout",
        hosting_country="NL",
        hosting_ip="192.0.2.7",
        hosting_asn=64500,
    )

    def ids(*args: str) -> list[int]:
        done = cli("list", "--json", *args)
        assert done.returncode == 0, done.stderr
        return [json.loads(line)["id"] for line in done.stdout.splitlines()]

    assert ids() == [german, timed_out]  # most urgent first
    # The domain as a user types it: Unicode, or a host under it.
    assert ids("--domain", "bücher.de") == [german]
    assert ids("--domain", "WWW.Bücher.DE") == [german]
    assert ids("--reason", "timeout") == [timed_out]
    assert ids("--org", "example hosting") == [german]
    assert ids("--country", "nl") == [timed_out]
    row = json.loads(cli("list", "--json", "--reason", "timeout").stdout)
    assert row["hosting"] == {"ip": "192.0.2.7", "country": "NL", "asn": 64500, "org": None}

    table = cli("list")
    assert table.stdout.splitlines()[0].split()[:3] == ["id", "status", "prio"]
    assert "(timeout)" in table.stdout
    assert "2 shown of 2" in table.stderr

    wrong = cli("list", "--country", "NLD")
    assert wrong.returncode == 2
    assert "two-letter" in wrong.stderr


def test_show_refuses_ids_no_target_can_have(cli: Run, committed: Engine) -> None:
    seed(committed, "https://example.org/c.jpg")
    for spelling in ("99999999999999999999999", "\uff11"):  # far too large; a full-width 1
        shown = cli("show", spelling, "--json")
        assert shown.returncode == 1, shown.stderr
        assert shown.stdout == ""
        assert "no matching target" in shown.stderr
        assert "Traceback" not in shown.stderr


def test_a_database_never_migrated_is_named_not_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    for args in (("targets", "list"), ("targets", "show", "1"), ("hashes", "lists")):
        done = subprocess.run(
            [sys.executable, "-m", "hotline.cli", "--data-dir", str(tmp_path), *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert "run `hotline db upgrade`" in done.stderr
        assert "Traceback" not in done.stderr
