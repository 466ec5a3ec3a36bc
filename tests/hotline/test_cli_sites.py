"""``hotline sites``: list and show sites, flag one as dedicated, leave a note."""

from __future__ import annotations

import getpass
import json

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col
from typer.testing import CliRunner

from hotline.cli_sites import sites_app
from hotline.db import session_scope
from hotline.models import AuditEvent


def sites(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(sites_app, list(args))
    return result.exit_code, result.stdout, result.stderr


def site_events() -> list[tuple[str, str, dict[str, object]]]:
    with session_scope() as session:
        rows = session.execute(
            select(AuditEvent)
            .where(col(AuditEvent.object_type) == "site")
            .order_by(col(AuditEvent.id))
        ).scalars()
        return [(e.actor, e.object_id or "", json.loads(e.details or "{}")) for e in rows]


def test_a_domain_not_seen_yet_can_be_flagged_and_noted(committed: Engine) -> None:
    # (Audit events outlive the tables the tests empty: only this test's are compared.)
    code, out, _ = sites("flag", "https://WWW.Example.co.uk/some/page", "--dedicated")
    assert code == 0
    assert out.strip() == "site 'example.co.uk': dedicated"
    code, out, _ = sites("show", "shop.example.co.uk", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["registered_domain"] == "example.co.uk"
    assert (shown["dedicated"], shown["target_count"], shown["note"]) == (True, 0, None)

    code, out, _ = sites("flag", "example.co.uk", "--note", "  mirrors of a forum  ")
    assert (code, out.strip()) == (0, "site 'example.co.uk': dedicated; note set")
    listed = [json.loads(line) for line in sites("list", "--flagged", "--json")[1].splitlines()]
    assert [(s["registered_domain"], s["note"]) for s in listed] == [
        ("example.co.uk", "mirrors of a forum")
    ]
    # The same again changes nothing and is not audited twice.
    assert sites("flag", "example.co.uk", "--dedicated")[1].strip() == (
        "site 'example.co.uk': nothing changed"
    )
    assert sites("flag", "example.co.uk", "--note", "")[1].strip() == (
        "site 'example.co.uk': dedicated; note cleared"
    )
    assert sites("flag", "example.co.uk", "--not-dedicated")[1].strip() == (
        "site 'example.co.uk': not flagged"
    )
    assert sites("list", "--flagged", "--json")[1] == ""
    actor = f"cli:{getpass.getuser()}"
    assert site_events()[-4:] == [
        (actor, "example.co.uk", {"change": "flagged", "dedicated": True, "reranked": 0}),
        (actor, "example.co.uk", {"change": "note", "note": "set", "reranked": 0}),
        (actor, "example.co.uk", {"change": "note", "note": "cleared", "reranked": 0}),
        (actor, "example.co.uk", {"change": "unflagged", "dedicated": False, "reranked": 0}),
    ]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["flag", "example.org"], 2, "nothing to change"),
        (["flag", "http://", "--dedicated"], 2, "Give a domain"),
        (["flag", "   ", "--dedicated"], 2, "Give a domain"),
        (["flag", "example.org", "--note", "x" * 2001], 2, "at most 2000 characters"),
        (["show", "never-reported.example"], 1, "No site with that registered domain"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    committed: Engine, args: list[str], code: int, message: str
) -> None:
    before = (sites("list", "--json")[1], site_events())
    result = CliRunner().invoke(sites_app, args)
    assert result.exit_code == code
    assert message in result.stderr
    assert (sites("list", "--json")[1], site_events()) == before
