"""``hotline targets`` as an operator runs it: a separate process on the test database."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from hotline.db import utcnow
from hotline.models import AuditEvent
from reporting.models import ReportCategory, ReportSource, Target, TargetStatus
from reporting.schemas import ReportCreate
from reporting.service import submit_report
from tests.conftest import REPO, broker_backlog

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
    # What the operator typed, not a pattern: % and _ are letters.
    assert ids("--org", "example%gmbh") == []
    assert ids("--org", "example_hosting") == []
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


def test_retry_hands_unreachable_targets_to_the_workers_again(
    cli: Run, committed: Engine, backend_env: dict[str, str]
) -> None:
    now = utcnow()
    outage = seed(
        committed,
        "https://gone-for-an-hour.example.com/a.jpg",
        status=TargetStatus.unreachable,
        status_reason="dns_error",
        attempts=4,
        status_changed_at=now - dt.timedelta(minutes=30),
    )
    older = seed(
        committed,
        "https://gone-last-week.example.com/b.jpg",
        status=TargetStatus.unreachable,
        status_reason="dns_error",
        attempts=4,
        status_changed_at=now - dt.timedelta(days=7),
    )
    missing = seed(
        committed,
        "https://example.org/404.jpg",
        status=TargetStatus.unreachable,
        status_reason="http_error_404",
        attempts=1,
    )
    queued = seed(committed, "https://example.org/q.jpg", status=TargetStatus.queued)

    def audited() -> list[tuple[str, bool, str | None]]:
        # (Audit events outlive the tables the tests empty: compared from here on.)
        with Session(committed) as session:
            events = session.execute(
                select(AuditEvent)
                .where(col(AuditEvent.object_type) == "target")
                .order_by(col(AuditEvent.id))
            ).scalars()
            return [(e.action, e.actor.startswith("cli:"), e.object_id) for e in events]

    before = audited()

    def state(target_id: int) -> tuple[str, int]:
        with Session(committed) as session:
            target = session.get(Target, target_id)
            assert target is not None
            return str(target.status), target.attempts

    nothing = cli("retry")
    assert nothing.returncode == 2
    assert "--reason, --since or --all" in nothing.stderr

    for mixed in (("--all", "--reason", "dns_error"), (str(queued), "--reason", "dns_error")):
        refused = cli("retry", *mixed)
        assert refused.returncode == 2
        assert "--reason" in refused.stderr

    bad_time = cli("retry", "--reason", "dns_error", "--since", "an hour ago")
    assert bad_time.returncode == 2
    assert "ISO 8601" in bad_time.stderr

    backlog = broker_backlog(backend_env)
    dry = cli("retry", "--all", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would retry 3 unreachable targets" in dry.stdout
    assert {state(i)[0] for i in (outage, older, missing)} == {"unreachable"}
    assert broker_backlog(backend_env) == backlog

    since = (now - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    done = cli("retry", "--reason", "dns_error", "--since", since)
    assert done.returncode == 0, done.stderr
    assert "1 unreachable target handed to the workers again" in done.stdout
    assert state(outage) == ("pending", 0)
    assert state(older) == ("unreachable", 4)
    assert state(missing) == ("unreachable", 1)
    assert broker_backlog(backend_env) == backlog + 1

    # Named, in any spelling: only the unreachable one is retried.
    named = cli("retry", "https://EXAMPLE.org/404.jpg", str(queued))
    assert named.returncode == 0, named.stderr
    assert f"target {queued} is queued: left as it is" in named.stderr
    assert state(missing) == ("pending", 0)
    assert state(queued)[0] == "queued"
    assert broker_backlog(backend_env) == backlog + 2

    unknown = cli("retry", "https://never-reported.example.com/", str(older))
    assert unknown.returncode == 1
    assert "no matching target: https://never-reported.example.com/" in unknown.stderr
    assert state(older) == ("unreachable", 4)  # nothing done when one is unknown

    assert audited()[len(before) :] == [
        ("retried", True, str(outage)),
        ("retried", True, str(missing)),
    ]


def test_help_loads_no_database_code() -> None:
    """``hotline --help`` (and a mistyped command) answer without importing SQLAlchemy,
    which took half of its 0.4 s: commands import what they use when they run."""
    probe = (
        "import sys; from typer.testing import CliRunner; from hotline.cli import app;"
        "result = CliRunner().invoke(app, ['--help']);"
        "print(result.exit_code, 'users' in result.output,"
        " sorted(m for m in ('sqlalchemy', 'sqlmodel', 'psycopg') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.strip()
    assert out == "0 True []"
