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
        (["flag", "http://", "--dedicated"], 2, "Give a registered domain"),
        (["flag", "   ", "--dedicated"], 2, "Give a registered domain"),
        (["flag", "co.uk", "--dedicated"], 2, "Give a registered domain"),
        (["flag", "com", "--dedicated"], 2, "Give a registered domain"),
        (["flag", "localhost", "--dedicated"], 2, "Give a registered domain"),
        (["flag", "example.org", "--note", "x" * 2001], 2, "at most 2000 characters"),
        (["flag", "example.org", "--note", "two\nlines"], 2, "without control characters"),
        (["flag", "example.org", "--note", "\x1b[31mred"], 2, "without control characters"),
        (["show", "never-reported.example.org"], 1, "No site with that registered domain"),
        (["show", "localhost"], 2, "Give a registered domain"),
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


def test_unflagging_a_domain_never_seen_leaves_no_trace(committed: Engine) -> None:
    before = (sites("list", "--json")[1], site_events())
    for args in (["--not-dedicated"], ["--note", ""]):
        code, out, _ = sites("flag", "never-seen.example.org", *args)
        assert (code, out.strip()) == (0, "site 'example.org': nothing changed")
    assert (sites("list", "--json")[1], site_events()) == before


def test_ip_address_sites_are_named_as_the_workers_key_them(committed: Engine) -> None:
    assert sites("flag", "http://[2001:db8::1]:8080/x", "--dedicated")[1].strip() == (
        "site '2001:db8::1': dedicated"
    )
    for spelling in ("2001:db8::1", "[2001:DB8::1]", "2001:0db8:0::1"):
        code, out, _ = sites("show", spelling, "--json")
        assert (code, json.loads(out)["registered_domain"]) == (0, "2001:db8::1")
    assert sites("flag", "198.51.100.7", "--dedicated")[1].strip() == (
        "site '198.51.100.7': dedicated"
    )


def test_two_staff_flagging_an_unseen_domain_at_once_both_succeed(committed: Engine) -> None:
    # The second waits for the first's row instead of failing on the unique key.
    import threading
    import time

    from hotline.db import utcnow
    from triage.sites import flag_site

    failures: list[BaseException] = []
    first_in = threading.Event()

    def first() -> None:
        try:
            with session_scope() as session:
                flag_site(session, "race.example.net", dedicated=True, now=utcnow())
                first_in.set()
                time.sleep(0.5)  # holds its new row, uncommitted
        except BaseException as exc:
            failures.append(exc)
            first_in.set()

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(10)
    try:
        with session_scope() as session:
            flag_site(session, "www.race.example.net", note="seen in two reports", now=utcnow())
    except BaseException as exc:
        failures.append(exc)
    thread.join(10)
    assert failures == []
    _, out, _ = sites("show", "race.example.net", "--json")
    shown = json.loads(out)
    assert (shown["dedicated"], shown["note"]) == (True, "seen in two reports")


def test_a_site_flagged_in_advance_is_first_seen_at_its_first_report(committed: Engine) -> None:
    import datetime as dt

    from triage.service import upsert_site
    from triage.sites import get_site

    reported_at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    assert sites("flag", "in-advance.example.org", "--dedicated")[0] == 0
    with session_scope() as session:
        assert upsert_site(session, "example.org", new_target=True, now=reported_at) == (0, True)
    with session_scope() as session:
        site = get_site(session, "example.org")
        assert (site.target_count, site.first_seen_at) == (1, reported_at)
    with session_scope() as session:  # a second report does not move it again
        upsert_site(session, "example.org", new_target=True, now=reported_at.replace(month=4))
        assert get_site(session, "example.org").first_seen_at == reported_at
