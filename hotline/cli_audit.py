"""``hotline audit``: verify the hash chain of the audit log, export its head, list events.

Wiring only; imported by ``hotline.cli`` (``app.add_typer(audit_app, name="audit")``) and
by nothing else. The logic is in ``hotline.audit``. Results go to stdout, errors to stderr;
``verify`` exits 1 when the chain is broken, so a cron job can alert on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

audit_app = typer.Typer(
    help="The tamper-evident audit log of staff actions.",
    no_args_is_help=True,
    add_completion=False,
)


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _read_anchor(path: Path) -> tuple[int, str]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return int(document["id"]), str(document["hash"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise fail(f"cannot read an exported head from {path}: {type(exc).__name__}", 2) from None


@audit_app.command("verify")
def verify_command(
    head_file: Annotated[
        Path | None,
        typer.Option(
            "--head-file",
            help="A head exported earlier with 'hotline audit head': that event must still "
            "be in the log with that hash.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Recompute the hash chain; name the first broken event (exit 1) or report it intact."""
    from hotline.audit import verify
    from hotline.db import session_scope

    anchor = _read_anchor(head_file) if head_file is not None else None
    with session_scope() as session:
        result = verify(session, anchor=anchor)
    if not result.ok:
        typer.echo(f"audit log broken at event {result.first_broken_id}: {result.reason}")
        raise typer.Exit(1)
    typer.echo(f"audit log intact: {result.checked} events, head {result.head_hash or 'none'}")


@audit_app.command("head")
def head_command() -> None:
    """Print the newest event as JSON {"id", "hash", "at"}, to keep outside the database."""
    from hotline.audit import head
    from hotline.db import session_scope

    with session_scope() as session:
        newest = head(session)
    if newest is None:
        raise fail("the audit log is empty")
    typer.echo(json.dumps(newest.as_json(), sort_keys=True))


@audit_app.command("list")
def list_command(
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 50,
    action: Annotated[str | None, typer.Option(help="Only events of this action.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List audit events, newest first."""
    from hotline.audit import events
    from hotline.db import session_scope

    with session_scope() as session:
        rows: list[dict[str, Any]] = [
            {
                "id": event.id,
                "at": event.at.isoformat(),
                "actor_id": event.actor_id,
                "actor": event.actor,
                "action": event.action,
                "object_type": event.object_type,
                "object_id": event.object_id,
                "details": json.loads(event.details) if event.details else None,
                "hash": event.hash,
            }
            for event in events(session, limit=limit, action=action)
        ]
    for row in rows:
        if as_json:
            typer.echo(json.dumps(row, sort_keys=True))
        else:
            target = f"{row['object_type']} {row['object_id']}" if row["object_type"] else "-"
            details = json.dumps(row["details"], sort_keys=True) if row["details"] else ""
            typer.echo(
                f"{row['id']:>8}  {row['at']}  {row['actor']:<24}  {row['action']:<14}  "
                f"{target}  {details}".rstrip()
            )


if __name__ == "__main__":
    from hotline.console import run

    run(audit_app, prog_name="hotline audit")
