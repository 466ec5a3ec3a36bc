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
from sqlalchemy import func, select

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
    from hotline.migrate import upgrade

    upgrade(revision=revision)
    typer.echo(f"database at {revision}")


@db_app.command("current")
def db_current() -> None:
    """Print the revision the database is at."""
    from alembic import command

    from hotline.migrate import alembic_config

    command.current(alembic_config())


def _target_row(target: Any) -> dict[str, Any]:
    return {
        "id": target.id,
        "url": target.canonical_url,
        "registered_domain": target.registered_domain,
        "status": str(target.status),
        "status_reason": target.status_reason,
        "report_count": target.report_count,
        "first_reported_at": target.first_reported_at.isoformat(),
        "last_reported_at": target.last_reported_at.isoformat(),
    }


@targets_app.command("list")
def targets_list(
    status: Annotated[str | None, typer.Option(help="Only targets in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List reported targets, newest first."""
    from hotline.db import session_scope
    from reporting.models import Target, TargetStatus

    if status is not None and status not in TargetStatus.__members__:
        raise fail(f"unknown status {status!r}; one of: {', '.join(TargetStatus.__members__)}", 2)
    query = select(Target).order_by(Target.id.desc()).limit(limit)  # type: ignore[union-attr]
    if status is not None:
        query = query.where(Target.status == status)  # type: ignore[arg-type]
    with session_scope() as session:
        rows = [_target_row(t) for t in session.execute(query).scalars()]
        total = session.execute(select(func.count()).select_from(Target)).scalar_one()
    for row in rows:
        if as_json:
            typer.echo(json.dumps(row))
        else:
            typer.echo(
                f"{row['id']:>6}  {row['status']:<11} {row['report_count']:>4}  {row['url']}"
            )
    if not as_json:
        typer.echo(f"{len(rows)} shown of {total}", err=True)


@targets_app.command("show")
def targets_show(target_id: Annotated[int, typer.Argument(help="Target id.")]) -> None:
    """Show one target as JSON."""
    from hotline.db import session_scope
    from reporting.models import Target

    with session_scope() as session:
        target = session.get(Target, target_id)
        if target is None:
            raise fail(f"no target with id {target_id}")
        typer.echo(json.dumps(_target_row(target), indent=2))


@app.command("sweep")
def sweep() -> None:
    """Hand over to the workers, now, every target pending longer than the configured delay."""
    from hotline.db import session_scope, utcnow
    from reporting.service import sweep_pending

    older = dt.timedelta(seconds=get_settings().pending_requeue_after_seconds)
    with session_scope() as session:
        ids = sweep_pending(session, now=utcnow(), older_than=older)
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
