"""The ``hotline`` command: serve the embedded hotline, migrate, inspect targets.

Wiring only; imported by nothing. Every command reads the same settings, so
``--data-dir`` (or ``HOTLINE_DATA_DIR``) points all of them at the same data.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from hotline.cli_audit import audit_app
from hotline.cli_exports import exports_app
from hotline.cli_hashes import hashes_app
from hotline.cli_partners import partners_app
from hotline.cli_sites import sites_app
from hotline.cli_users import users_app
from hotline.settings import get_settings

app = typer.Typer(
    help="Hotline: anonymous reporting and triage of child sexual abuse material online.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
targets_app = typer.Typer(help="Reported targets (one per canonical URL).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(targets_app, name="targets")
app.add_typer(hashes_app, name="hashes")
app.add_typer(sites_app, name="sites")
app.add_typer(users_app, name="users")
app.add_typer(audit_app, name="audit")
app.add_typer(partners_app, name="partners")
app.add_typer(exports_app, name="exports")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Directory of the embedded runtime's files (HOTLINE_DATA_DIR).",
        file_okay=False,
        dir_okay=True,
        show_default=False,
    ),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def use_data_dir(data_dir: Path | None) -> None:
    if data_dir is not None:
        os.environ["HOTLINE_DATA_DIR"] = str(data_dir.expanduser().resolve())
    get_settings.cache_clear()
    try:
        get_settings()
    except ValueError as exc:
        raise fail(f"invalid settings: {exc}") from None


@app.callback()
def main_options(data_dir: DataDir = None) -> None:
    use_data_dir(data_dir)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply the migrations up to REVISION (default: the newest)."""
    from hotline.migrate import current_revision, upgrade

    upgrade(revision=revision)
    typer.echo(f"database at revision {current_revision()}")


@db_app.command("current")
def db_current() -> None:
    """Print the revision the database is at."""
    from alembic import command

    from hotline.migrate import alembic_config

    command.current(alembic_config())


def _target_row(target: Any) -> dict[str, Any]:
    return {
        "id": target.id,
        "canonical_url": target.canonical_url,
        "registered_domain": target.registered_domain,
        "status": str(target.status),
        "reason": target.status_reason,
        "priority": target.priority,
        "hosting": {
            "ip": target.hosting_ip,
            "country": target.hosting_country,
            "asn": target.hosting_asn,
            "org": target.hosting_org,
        },
        "report_count": target.report_count,
        "first_reported_at": target.first_reported_at.isoformat(),
    }


@targets_app.command("list")
def targets_list(
    status: Annotated[str | None, typer.Option(help="Only targets in this status.")] = None,
    reason: Annotated[
        str | None, typer.Option(help="Only with this status reason (e.g. timeout).")
    ] = None,
    domain: Annotated[
        str | None, typer.Option(help="Only this registered domain (or a host under it).")
    ] = None,
    country: Annotated[
        str | None, typer.Option(help="Only hosted in this country (two-letter ISO code).")
    ] = None,
    org: Annotated[
        str | None, typer.Option(help="Only hosted by an organisation whose name holds this.")
    ] = None,
    min_priority: Annotated[int | None, typer.Option(help="Only at least this priority.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List reported targets, most urgent first (priority, then age)."""
    from sqlalchemy import func, select
    from sqlmodel import col

    from hotline.db import session_scope
    from reporting.models import Target, TargetStatus
    from reporting.urls import registered_domain

    if status is not None and status not in TargetStatus.__members__:
        raise fail(f"unknown status {status!r}; one of: {', '.join(TargetStatus.__members__)}", 2)
    if country is not None and not (len(country) == 2 and country.isascii() and country.isalpha()):
        raise fail(f"--country takes a two-letter ISO code (NL, UA), not {country!r}", 2)
    query = select(Target)
    if status is not None:
        query = query.where(col(Target.status) == status)
    if reason is not None:
        query = query.where(col(Target.status_reason) == reason)
    if domain is not None:
        # Stored as the registered domain in ASCII (punycode): spell the filter the same.
        query = query.where(col(Target.registered_domain) == registered_domain(domain))
    if country is not None:
        query = query.where(col(Target.hosting_country) == country.upper())
    if org is not None:
        held_by = func.lower(col(Target.hosting_org))
        query = query.where(held_by.contains(org.lower(), autoescape=True))
    if min_priority is not None:
        query = query.where(col(Target.priority) >= min_priority)
    count = select(func.count()).select_from(query.subquery())
    query = query.order_by(col(Target.priority).desc(), col(Target.first_reported_at)).limit(limit)
    with session_scope() as session:
        rows = [_target_row(t) for t in session.execute(query).scalars()]
        total = session.execute(count).scalar_one()
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    if rows:
        typer.echo(f"{'id':>7}  {'status':<11} {'prio':>5}  cc  {'rep':>4}  url (reason)")
    for row in rows:
        typer.echo(
            f"{row['id']:>7}  {row['status']:<11} {row['priority']:>5}  "
            f"{row['hosting']['country'] or '--':<2}  {row['report_count']:>4}  "
            f"{row['canonical_url']}" + (f"  ({row['reason']})" if row["reason"] else "")
        )
    typer.echo(f"{len(rows)} shown of {total}", err=True)


@targets_app.command("show")
def targets_show(
    url_or_id: Annotated[
        str, typer.Argument(help="Target id, or the reported URL in any spelling.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")] = False,
) -> None:
    """Show a target: status, priority and its reasons, hosting, media with hashes and matches."""
    from hotline.db import session_scope
    from triage.service import describe_target, find_target

    with session_scope() as session:
        target = find_target(session, url_or_id)
        if target is None:
            raise fail("no matching target")
        shown = describe_target(session, target)
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    hosting = shown["hosting"]
    for label, value in (
        ("id", shown["id"]),
        ("url", shown["canonical_url"]),
        ("domain", shown["registered_domain"]),
        ("status", shown["status"] + (f" ({shown['reason']})" if shown["reason"] else "")),
        ("priority", f"{shown['priority']}: " + "; ".join(shown["priority_reasons"])),
        ("hosting", f"{hosting['ip'] or '-'} {hosting['country'] or '--'} {hosting['org'] or ''}"),
        ("reports", shown["report_count"]),
        (
            "broken",
            ", ".join(f"{reason} x{n}" for reason, n in shown["broken_links"].items()) or "-",
        ),
    ):
        typer.echo(f"{label:>9}  {value}")
    for media in shown["media"]:
        size = f"{media['width']}x{media['height']}" if media["width"] else "-"
        typer.echo(
            f"\n  {media['kind']:<6} {media['mime']:<16} {size:<11} sha256 {media['sha256']}"
        )
        typer.echo(f"         md5 {media['md5']}  sha1 {media['sha1']}")
        typer.echo(
            f"         phash {media['phash'] or '-'}  pdq {media['pdq'] or '-'} "
            f"(q {media['pdq_quality']})"
        )
        if media["hash_note"]:
            typer.echo(f"         hashed in part: {media['hash_note']}")
        for match in media["matches"]:
            typer.echo(
                f"         match {match['kind']} {match['hash_type']} d={match['distance']} "
                f"in {match['source']}"
                + (f" ({match['media_sha256'][:12]})" if match["media_sha256"] else "")
                + (f" frame {match['frame']}" if match["frame"] else "")
            )
    if shown["earlier_media"]:
        typer.echo("\n  no longer on the page (seen when processed before):")
        for media in shown["earlier_media"]:
            typer.echo(
                f"  {media['kind']:<6} {media['mime']:<16} last seen "
                f"{media['last_seen_at'][:16].replace('T', ' ')}  sha256 {media['sha256']}"
            )


@targets_app.command("retry")
def targets_retry(
    urls_or_ids: Annotated[
        list[str] | None,
        typer.Argument(help="Targets by id or reported URL (any spelling).", show_default=False),
    ] = None,
    reason: Annotated[
        str | None,
        typer.Option(help="Every unreachable target with this reason (e.g. dns_error)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only those unreachable since this ISO 8601 time (or date, UTC)."),
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every unreachable target, whatever its reason.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only say which targets; change nothing.")
    ] = False,
) -> None:
    """Try unreachable targets afresh (after an outage of the network or the resolver):
    back to pending with their attempts counted from nought, handed to the workers."""
    from hotline import audit
    from hotline.db import session_scope, utcnow
    from partners.exports import InvalidSince, parse_since
    from reporting.models import TargetStatus
    from reporting.service import retry_unreachable
    from triage.service import find_target

    if not (urls_or_ids or reason or since or every):
        raise fail("name targets, or choose them with --reason, --since or --all", 2)
    if urls_or_ids and (every or reason or since):
        raise fail("name targets, or choose them with --reason, --since or --all: not both", 2)
    if every and (reason or since):
        raise fail("--all is every unreachable target: give it no --reason or --since", 2)
    try:
        after = parse_since(since)
    except InvalidSince as exc:
        raise fail(f"--since: {exc.detail}", 2) from None
    now = utcnow()
    with session_scope() as session:
        ids: list[int] | None = None
        if urls_or_ids:
            found = {given: find_target(session, given) for given in urls_or_ids}
            unknown = [given for given, target in found.items() if target is None]
            if unknown:
                raise fail(f"no matching target: {', '.join(unknown)}")
            named = {int(t.id or 0): t for t in found.values() if t is not None}
            for target in named.values():
                if target.status != TargetStatus.unreachable:
                    typer.echo(f"target {target.id} is {target.status}: left as it is", err=True)
            ids = sorted(named)
        retried = retry_unreachable(
            session, now=now, ids=ids, reason=reason, since=after, dry_run=dry_run
        )
        if retried and not dry_run:
            audit.record(
                session,
                action="retried",
                actor=audit.console_actor(),
                object_type="target",
                object_id=retried[0] if len(retried) == 1 else None,
                details={"targets": len(retried), "ids": retried[:100]}
                | ({"reason": reason} if reason else {})
                | ({"since": after.isoformat()} if after else {}),
                now=now,
            )
    plural = "s" if len(retried) != 1 else ""
    if dry_run:
        typer.echo(f"would retry {len(retried):,} unreachable target{plural}")
    else:
        typer.echo(f"{len(retried):,} unreachable target{plural} handed to the workers again")
    if retried:
        shown = ", ".join(str(i) for i in retried[:20])
        more = f" and {len(retried) - 20:,} more" if len(retried) > 20 else ""
        typer.echo(f"ids: {shown}{more}")


@app.command("sweep")
def sweep() -> None:
    """Hand over to the workers, now, every target pending longer than the configured delay."""
    from hotline.db import session_scope, utcnow
    from reporting.service import sweep_pending

    settings = get_settings()
    with session_scope() as session:
        ids = sweep_pending(
            session,
            now=utcnow(),
            older_than=dt.timedelta(seconds=settings.pending_requeue_after_seconds),
            stale_after=dt.timedelta(seconds=settings.process_lease_seconds),
        )
    typer.echo(f"{len(ids)} target(s) handed over again")


def _children(host: str, port: int) -> dict[str, list[str]]:
    settings = get_settings()
    py = sys.executable
    level = settings.log_level.lower()
    return {
        "api": [
            py,
            "-m",
            "uvicorn",
            "hotline.web:create_app",
            "--factory",
            "--host",
            host,
            "--port",
            str(port),
            "--no-access-log",
            "--no-proxy-headers",
            "--ws",
            "none",
            "--log-level",
            level,
        ],
        "worker": [
            py,
            "-m",
            "celery",
            "-A",
            "hotline.worker",
            "worker",
            "--loglevel",
            level,
            "--concurrency",
            str(settings.worker_concurrency),
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            f"worker-{os.getpid()}@%h",
        ],
        "beat": [
            py,
            "-m",
            "celery",
            "-A",
            "hotline.worker",
            "beat",
            "--loglevel",
            level,
            "--schedule",
            str(settings.resolved_data_dir / "celerybeat-schedule"),
        ],
    }


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address the web server listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port of the web server.")] = 8000,
    data_dir: DataDir = None,
) -> None:
    """Run the whole embedded hotline (API and pages, a worker, beat) until Ctrl-C or SIGTERM."""
    from hotline.migrate import upgrade

    use_data_dir(data_dir)
    settings = get_settings()
    upgrade()
    env = {**os.environ, "HOTLINE_DATA_DIR": str(settings.resolved_data_dir)}
    processes = {
        name: subprocess.Popen(argv, env=env, start_new_session=True)  # noqa: S603
        for name, argv in _children(host, port).items()
    }
    typer.echo(
        f"hotline serving on http://{host}:{port}/ with data in {settings.resolved_data_dir}",
        err=True,
    )
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        dead = [name for name, p in processes.items() if p.poll() is not None]
        if dead:
            typer.echo(f"error: {', '.join(dead)} stopped unexpectedly; shutting down", err=True)
            exit_code = 1
            break
        time.sleep(0.2)
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    typer.echo("hotline stopped", err=True)
    raise typer.Exit(exit_code)


def _schema_missing(exc: BaseException) -> bool:
    """Whether a database error says the hotline's tables (or newer columns) are not there."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return False
    if getattr(exc.orig, "sqlstate", None) in ("42P01", "42703"):  # PostgreSQL
        return True
    return str(exc.orig).startswith(("no such table", "no such column"))  # SQLite


def main() -> None:
    from hotline.console import run

    run(_main)


def _main() -> None:
    try:
        app()
    except Exception as exc:
        if not _schema_missing(exc):
            raise
        from sqlalchemy.engine import make_url

        where = make_url(get_settings().sqlalchemy_url)
        typer.echo(
            f"error: the database {where.database if where.drivername == 'sqlite' else where}"
            " has no hotline tables, or older ones: run `hotline db upgrade` first"
            " (or point --data-dir or HOTLINE_DATABASE_URL at the right one)",
            err=True,
        )
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
