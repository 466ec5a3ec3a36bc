"""``hotline users``, run as a user runs it: a separate process on the test database.

Started as ``python -m hotline.cli_users``, so these tests do not depend on where the
sub-app is mounted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import pyotp
import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from hotline import auth
from hotline.cli_users import users_app
from hotline.db import session_scope, utcnow
from tests.conftest import REPO

Run = Callable[..., subprocess.CompletedProcess[str]]
PASSWORD = "correct horse battery"


@pytest.fixture
def cli(committed: Engine, backend_env: dict[str, str]) -> Run:
    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hotline.cli_users", *args],
            env={**os.environ, **backend_env},
            cwd=REPO,
            capture_output=True,
            text=True,
            input=stdin,
            timeout=60,
        )

    return run


def add(cli: Run, email: str = "admin@hotline.example", *extra: str) -> str:
    result = cli("add", email, "--role", "admin", "--password-stdin", *extra, stdin=PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_add_prints_the_uri_only_when_asked(cli: Run) -> None:
    out = add(cli, "Admin@Hotline.example", "--print-totp-uri")
    assert "created admin@hotline.example (admin)" in out
    uri = out.strip().splitlines()[-1]
    assert uri.startswith("otpauth://totp/Hotline:admin%40hotline.example?secret=")
    now = utcnow()
    with session_scope() as session:
        user = auth.authenticate(
            session,
            email="admin@hotline.example",
            password=PASSWORD,
            totp=auth.totp_code(pyotp.parse_uri(uri).secret, auth.totp_step(now)),
            now=now,
            cipher=auth.configured_staff_cipher(),
        )
    assert user.role.value == "admin"
    quiet = add(cli, "b@hotline.example")
    assert "otpauth" not in quiet
    assert "reset-2fa b@hotline.example --print-totp-uri" in quiet


def test_add_refusals_go_to_stderr(cli: Run) -> None:
    add(cli)
    again = cli(
        "add", "admin@hotline.example", "--role", "admin", "--password-stdin", stdin=PASSWORD
    )
    assert again.returncode == 1
    assert "exists already" in again.stderr
    weak = cli("add", "w@hotline.example", "--role", "analyst", "--password-stdin", stdin="short")
    assert weak.returncode == 1
    assert "12 characters" in weak.stderr
    role = cli("add", "r@hotline.example", "--role", "root", "--password-stdin", stdin=PASSWORD)
    assert role.returncode == 2
    no_tty = cli("add", "t@hotline.example", "--role", "analyst", stdin=PASSWORD)
    assert no_tty.returncode == 2
    assert "--password-stdin" in no_tty.stderr


def test_disable_reset_and_list(cli: Run) -> None:
    first = add(cli, "admin@hotline.example", "--print-totp-uri").strip().splitlines()[-1]
    add(cli, "a@hotline.example")
    reset = cli("reset-2fa", "admin@hotline.example", "--print-totp-uri")
    assert reset.returncode == 0, reset.stderr
    second = reset.stdout.strip().splitlines()[-1]
    assert pyotp.parse_uri(second).secret != pyotp.parse_uri(first).secret
    assert cli("disable", "a@hotline.example").returncode == 0
    missing = cli("disable", "nobody@hotline.example")
    assert missing.returncode == 1
    assert "No staff account" in missing.stderr
    listed = cli("list", "--json")
    rows = {row["email"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert rows["a@hotline.example"]["disabled"] is True
    assert rows["admin@hotline.example"]["disabled"] is False
    assert rows["admin@hotline.example"]["totp_enrolled"] is False
    table = cli("list").stdout
    assert "a@hotline.example" in table
    assert "disabled" in table
    assert PASSWORD not in listed.stdout + table
    # Every change made at the console is in the audit log, by the operator's account.
    from sqlalchemy import select

    from hotline.db import session_scope
    from hotline.models import AuditEvent

    with session_scope() as session:
        changes = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "admin_change")  # type: ignore[arg-type]
        ).all()
    assert [json.loads(e.details or "{}")["change"] for e in changes][-4:] == [
        "user_created",
        "user_created",
        "second_factor_reset",
        "disabled",
    ]
    assert all(e.actor.startswith("cli:") for e in changes[-4:])


@pytest.mark.parametrize("command", [[], ["add"], ["disable"], ["reset-2fa"], ["list"]])
def test_help_everywhere(command: list[str]) -> None:
    result = CliRunner().invoke(users_app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
