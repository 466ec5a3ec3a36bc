"""Exports: the hash list of a picture confirmed here is exported with the real CLI,
imported into a second, empty hotline database with its real ``hotline hashes import``,
and there recognises a re-encoded and a resized copy of the picture; the URL list leaves
out removed targets; ``since`` gives what changed; the partner API signs what it sends."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col
from standardwebhooks import Webhook
from typer.testing import CliRunner

from hotline import audit
from hotline.cli import app
from hotline.db import session_scope, utcnow
from hotline.models import AuditEvent
from partners import exports, rechecks, registry
from partners.models import PartnerKind, SecretPurpose
from partners.schemas import PartnerSpec
from reporting.models import Target, TargetStatus
from tests.conftest import REPO
from tests.fixtures import images
from tests.fixtures.servers import LocalHTTPServer
from tests.partners.conftest import confirmed_target
from tests.partners.test_rechecks import confirm, publish
from triage.assessment import own_list
from triage.hashing import hash_media
from triage.hashlists import KEY_COLUMNS
from triage.models import HashList, KnownEntry, Media, Sighting
from triage.neardup import NearDuplicates


def add_partner(name: str, *, may_export: bool) -> tuple[str, str]:
    """A partner hotline; returns its API key and the secret its exports are signed with."""
    with session_scope() as session:
        added = registry.add_partner(
            session,
            PartnerSpec(
                name=name,
                kind=PartnerKind.hotline,
                countries=["PL"],
                webhook_url="https://hotline.example.pl/hook",
                may_export=may_export,
            ),
            now=utcnow(),
            cipher=registry.partner_cipher(),
        )
    return added.secrets[SecretPurpose.inbound_api_key], added.secrets[
        SecretPurpose.outbound_signing
    ]


def other_hotline(tmp_path: Path) -> tuple[dict[str, str], Engine]:
    """A second hotline: its own SQLite database, schema made by its own CLI."""
    data = tmp_path / "other-hotline"
    data.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")},
        "HOTLINE_DATA_DIR": str(data),
        "HOTLINE_DATABASE_URL": f"sqlite:///{data / 'hotline.sqlite3'}",
    }
    run(env, "db", "upgrade")
    return env, create_engine(env["HOTLINE_DATABASE_URL"])


def run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "hotline.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def listed(engine: Engine, name: str) -> set[tuple[str, str, str | None]]:
    with Session(engine) as session:
        entries = session.execute(
            select(KnownEntry)
            .join(HashList, col(HashList.id) == col(KnownEntry.list_id))
            .where(col(HashList.name) == name)
        ).scalars()
        return {
            (t, getattr(e, t), e.category) for e in entries for t in KEY_COLUMNS if getattr(e, t)
        }


# -- the acceptance ---------------------------------------------------------------------------


def test_an_exported_hash_list_is_imported_by_another_hotline_which_then_finds_the_media(
    committed: Engine, http_server: LocalHTTPServer, tmp_path: Path
) -> None:
    pictures = images.variants(8201)
    with session_scope() as session:
        target = confirm(session, publish(http_server, pictures["original"]))
        media = session.execute(
            select(Media)
            .join(Sighting, col(Sighting.media_id) == col(Media.id))
            .where(col(Sighting.target_id) == target.id)
        ).scalar_one()
    ours = {(kind, getattr(media, kind)) for kind in ("sha256", "sha1", "md5", "pdq", "phash")}
    assert media.pdq is not None
    assert media.phash is not None
    _, secret = add_partner("hotline-pl", may_export=True)

    env, engine = other_hotline(tmp_path)
    runner = CliRunner()
    categories = {"csv": "baseline", "jsonl": "baseline", "vics": "1"}
    for fmt, category in categories.items():
        out = tmp_path / f"hashes.{fmt}"
        result = runner.invoke(
            app, ["exports", "hashes", "--format", fmt, "--out", str(out), "--sign", "hotline-pl"]
        )
        assert result.exit_code == 0, result.output
        body = out.read_bytes()
        signature = json.loads((tmp_path / f"hashes.{fmt}.sig").read_text())
        assert exports.verify_detached(body, signature, secret)
        assert not exports.verify_detached(body + b" ", signature, secret)

        summary = run(env, "hashes", "import", str(out), "--list", f"from-ua-{fmt}")
        line = "media item" if fmt == "vics" else "line"
        assert f"1 {line} read, 1 entry added, 0 duplicates, 0 {line}s rejected" in summary
        # Exactly the hashes confirmed here, unchanged.
        assert listed(engine, f"from-ua-{fmt}") == {(k, v, category) for k, v in ours}

    # The second hotline's near-duplicate matching finds copies of the picture.
    near = NearDuplicates(phash_radius=8, pdq_radius=31, pdq_min_quality=50, refresh_seconds=0)
    with Session(engine) as session:
        for variant in ("reencoded", "resized"):
            copy = hash_media(pictures[variant])
            assert copy.sha256 != media.sha256
            found = near.lookup(
                session, phash=copy.phash, pdq=copy.pdq, pdq_quality=copy.pdq_quality
            )
            assert {m.source for m in found} >= {f"from-ua-{f}" for f in categories}, variant
        # And the original by its exact hash.
        exact = session.execute(
            select(col(HashList.name))
            .join(KnownEntry, col(KnownEntry.list_id) == col(HashList.id))
            .where(col(KnownEntry.sha256) == media.sha256)
        ).scalars()
        assert set(exact) == {f"from-ua-{f}" for f in categories}
    engine.dispose()


# -- URL list, since ---------------------------------------------------------------------------


def mine(rows: list[dict[str, Any]], targets: list[Target]) -> list[str]:
    urls = {t.canonical_url for t in targets}
    return [r["url"] for r in rows if r["url"] in urls]


def test_the_url_list_leaves_out_removed_targets_and_since_gives_what_changed(
    session: Session,
) -> None:
    t0 = dt.datetime(2025, 5, 1, 12, tzinfo=dt.UTC)
    old = confirmed_target(session, country="PL")
    new = confirmed_target(session, country="PL", status=TargetStatus.forwarded)
    gone = confirmed_target(session, country="PL")
    queued = confirmed_target(session, country="PL", status=TargetStatus.queued)
    for target, at in ((old, t0), (new, t0 + dt.timedelta(hours=5)), (gone, t0), (queued, t0)):
        target.status_changed_at = at
    session.flush()
    assert rechecks.mark_removed(session, int(gone.id or 0), t0 + dt.timedelta(hours=1), "test")
    everyone = [old, new, gone, queued]
    now = t0 + dt.timedelta(days=1)

    full = exports.export(session, "urls", "jsonl", now=now)
    rows = [json.loads(line) for line in full.body.decode().splitlines()]
    assert mine(rows, everyone) == [old.canonical_url, new.canonical_url]
    assert set(rows[0]) == set(exports.URL_COLUMNS)

    later = exports.export(session, "urls", "csv", now=now, since=t0 + dt.timedelta(hours=2))
    table = list(csv.DictReader(io.StringIO(later.body.decode())))
    assert mine(table, everyone) == [new.canonical_url]
    assert table[-1]["hosting_country"] == "PL"
    assert later.as_of == now

    # A removed target that comes back is listed again, as a change.
    gone.status = TargetStatus.forwarded
    gone.removed_at = None
    gone.status_changed_at = t0 + dt.timedelta(hours=8)
    session.flush()
    again = exports.export(session, "urls", "jsonl", now=now, since=t0 + dt.timedelta(hours=6))
    assert mine([json.loads(x) for x in again.body.decode().splitlines()], everyone) == [
        gone.canonical_url
    ]

    with pytest.raises(exports.UnsupportedExport):
        exports.export(session, "urls", "vics", now=now)


def test_since_on_the_hash_list_gives_the_media_confirmed_after_it(session: Session) -> None:
    t0 = dt.datetime(2025, 5, 1, 12, tzinfo=dt.UTC)
    own = own_list(session, now=t0)
    first = confirmed_target(session, country="UA")
    second = confirmed_target(session, country="UA")
    added = []
    for target, at in ((first, t0), (second, t0 + dt.timedelta(days=2))):
        media = (
            session.execute(
                select(Media)
                .join(Sighting, col(Sighting.media_id) == col(Media.id))
                .where(col(Sighting.target_id) == target.id)
                .order_by(col(Media.id))
            )
            .scalars()
            .first()
        )
        assert media is not None
        session.add(
            KnownEntry(
                list_id=int(own.id or 0),
                sha256=media.sha256,
                sha1=media.sha1,
                md5=media.md5,
                category="national" if target is second else "baseline",
                added_at=at,
            )
        )
        added.append(media.sha256)
    session.flush()
    now = t0 + dt.timedelta(days=3)

    def sha256s(made: exports.Export) -> list[str]:
        document = json.loads(made.body)
        return [m["SHA256"] for m in document["value"] if m["SHA256"] in added]

    assert sha256s(exports.export(session, "hashes", "vics", now=now)) == added
    since = exports.export(session, "hashes", "vics", now=now, since=t0 + dt.timedelta(days=1))
    assert sha256s(since) == [added[1]]
    [item] = [m for m in json.loads(since.body)["value"] if m["SHA256"] == added[1]]
    assert item["Category"] == 3
    assert item["Classification"] == "national"
    assert "PDQ" not in item  # none known for it: left out, not empty

    assert exports.parse_since("2025-05-02") == dt.datetime(2025, 5, 2, tzinfo=dt.UTC)
    assert exports.parse_since("2025-05-02T10:00:00Z") == dt.datetime(2025, 5, 2, 10, tzinfo=dt.UTC)
    for wrong in ("yesterday", "2025-05-02T10:00:00"):
        with pytest.raises(exports.InvalidSince):
            exports.parse_since(wrong)


# -- the partner API ---------------------------------------------------------------------------


def test_partners_allowed_to_export_get_signed_lists_through_the_api(client: Any) -> None:
    with session_scope() as session:
        head = audit.head(session)
    key, secret = add_partner("hotline-pl", may_export=True)
    other_key, _ = add_partner("hotline-cz", may_export=False)
    with session_scope() as session:
        target = confirmed_target(session, country="PL")
        url = target.canonical_url
        sha256s = {
            m.sha256
            for m in session.execute(
                select(Media)
                .join(Sighting, col(Sighting.media_id) == col(Media.id))
                .where(col(Sighting.target_id) == target.id)
            ).scalars()
        }
        own = own_list(session, now=utcnow())
        for value in sha256s:
            session.add(KnownEntry(list_id=int(own.id or 0), sha256=value, category="baseline"))
    auth = {"Authorization": f"Bearer {key}"}

    response = client.get("/api/v1/partner/exports/urls", params={"format": "jsonl"}, headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    # The partner verifies the answer as it verifies our deliveries.
    Webhook(secret).verify(response.content, dict(response.headers), json_parse=False)
    assert [json.loads(line)["url"] for line in response.text.splitlines()] == [url]
    as_of = response.headers["x-export-as-of"]

    hashes = client.get("/api/v1/partner/exports/hashes", params={"format": "csv"}, headers=auth)
    assert hashes.status_code == 200
    Webhook(secret).verify(hashes.content, dict(hashes.headers), json_parse=False)
    assert {r["sha256"] for r in csv.DictReader(io.StringIO(hashes.text))} >= sha256s

    nothing_new = client.get(
        "/api/v1/partner/exports/urls", params={"format": "csv", "since": as_of}, headers=auth
    )
    assert nothing_new.status_code == 200
    assert nothing_new.text.splitlines() == [",".join(exports.URL_COLUMNS)]

    vics = client.get("/api/v1/partner/exports/hashes", params={"format": "vics"}, headers=auth)
    assert vics.status_code == 200
    assert {m["SHA256"] for m in vics.json()["value"]} >= sha256s

    refused = {
        "no key": client.get("/api/v1/partner/exports/urls"),
        "wrong key": client.get(
            "/api/v1/partner/exports/urls", headers={"Authorization": "Bearer hpk_wrong"}
        ),
        "not allowed": client.get(
            "/api/v1/partner/exports/hashes", headers={"Authorization": f"Bearer {other_key}"}
        ),
        "vics urls": client.get(
            "/api/v1/partner/exports/urls", params={"format": "vics"}, headers=auth
        ),
        "bad since": client.get(
            "/api/v1/partner/exports/urls", params={"since": "soon"}, headers=auth
        ),
    }
    assert {k: r.status_code for k, r in refused.items()} == {
        "no key": 401,
        "wrong key": 401,
        "not allowed": 403,
        "vics urls": 422,
        "bad since": 422,
    }
    assert url not in refused["not allowed"].text

    with session_scope() as session:
        actor = f"partner:{registry.find_partner(session, 'hotline-pl').id}"
        events = session.execute(
            select(AuditEvent)
            .where(
                col(AuditEvent.action) == "exported",
                col(AuditEvent.actor) == actor,
                col(AuditEvent.id) > (head.id if head else 0),
            )
            .order_by(col(AuditEvent.id))
        ).scalars()
        seen = [json.loads(e.details or "{}") for e in events]
    assert [(d["list"], d["format"], d["rows"]) for d in seen] == [
        ("urls", "jsonl", 1),
        ("hashes", "csv", len(sha256s)),
        ("urls", "csv", 0),
        ("hashes", "vics", len(sha256s)),
    ]
    assert not any(url in json.dumps(d) for d in seen)
