"""``hotline hashes``: import known-hash lists, show them, enable, disable, remove them.

Wiring only; imported by ``hotline.cli`` (``app.add_typer(hashes_app, name="hashes")``)
and by nothing else. The logic is in ``triage.hashlists``. Progress goes to stderr, the
summary and listings to stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from hotline.errors import HotlineError

hashes_app = typer.Typer(
    help="Known-hash lists (Project VIC, INTERPOL ICSE, national lists, the hotline's own).",
    no_args_is_help=True,
    add_completion=False,
)

SHOWN_REJECTED = 20
CATCH_UP_MARGIN = 1000  # media ids below the newest at the start, matched again

ListName = Annotated[str, typer.Argument(help="Name of the hash list.", show_default=False)]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


@hashes_app.command("import")
def import_(
    file: Annotated[
        Path,
        typer.Argument(
            help="The list file, '-' for standard input. CSV (a header naming sha256, sha1, "
            "md5, pdq, phash, category), JSON lines, Project VIC VICS JSON or an INTERPOL "
            "ICSE ';'-separated export; the format is told from the content.",
            show_default=False,
        ),
    ],
    list_name: Annotated[
        str,
        typer.Option(
            "--list", "-l", help="Add to this list (created if missing).", show_default=False
        ),
    ],
    description: Annotated[
        str | None, typer.Option(help="Description of the list (sets it if given).")
    ] = None,
    show_rejected: Annotated[
        bool,
        typer.Option(
            "--show-rejected",
            help=f"Print every rejected line kept (default: the first {SHOWN_REJECTED}).",
        ),
    ] = False,
) -> None:
    """Import a hash list file into a list; bad lines are reported by number, good ones kept."""
    from hotline.db import session_scope, utcnow
    from triage.hashlists import REJECTED_KEPT, get_list, import_list
    from triage.matches import SeenOnList, match_seen_media, newest_media

    stream: IO[bytes]
    try:
        stream = sys.stdin.buffer if str(file) == "-" else file.open("rb")
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror or exc}") from None
    progress = _progress()
    task: TaskID | None = None
    seen = SeenOnList(0, [])

    def on_stage(stage: str) -> None:
        # Started only once the format is known: an error then prints no empty bar.
        nonlocal task
        if task is None:
            progress.start()
            task = progress.add_task(stage, total=None)
        progress.update(task, description=stage)

    def on_progress(done: int, total: int) -> None:
        if task is not None:
            progress.update(task, completed=done, total=total or None)

    # Media a worker records while the import runs cannot see the list, nor the import
    # them: those are matched once the list is committed (the margin: media of workers'
    # transactions still open when the import began).
    try:
        with stream:
            with session_scope() as session:
                before = max(newest_media(session) - CATCH_UP_MARGIN, 0)
                summary = import_list(
                    session,
                    stream,
                    list_name=list_name,
                    description=description,
                    on_progress=on_progress,
                    on_stage=on_stage,
                )
                if summary.entries == 0:
                    # Nothing usable: leave no empty list behind.
                    session.rollback()
                else:
                    seen = match_seen_media(
                        session, get_list(session, list_name).id or 0, now=utcnow()
                    )
                    _audit(
                        session,
                        list_name,
                        "imported",
                        format=str(summary.format),
                        added=summary.added,
                        duplicates=summary.duplicates,
                        rejected=summary.rejected_count,
                    )
            if summary.entries:
                with session_scope() as session:
                    late = match_seen_media(
                        session,
                        get_list(session, list_name).id or 0,
                        now=utcnow(),
                        media_above=before,
                        # The list as this import left it (another import into it
                        # matches what it adds itself).
                        hashes=seen.hashes,
                    )
                seen = SeenOnList(
                    seen.media + late.media,
                    sorted(set(seen.raised) | set(late.raised)),
                    near=seen.near + late.near,
                )
            if task is not None:
                progress.update(task, description="done")
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror or exc}") from None
    except HotlineError as exc:
        raise fail(exc.detail) from None
    finally:
        progress.stop()

    noun = "media item" if summary.format == "vics" else "line"
    typer.echo(
        f"{summary.format} list {summary.list_name!r}: "
        f"{_count(summary.total_lines, noun)} read, "
        f"{_count(summary.added, 'entry', 'entries')} added, "
        f"{_count(summary.duplicates, 'duplicate')}, "
        f"{_count(summary.rejected_count, noun)} rejected"
    )
    if seen.media:
        near = f" ({seen.near:,} only as near duplicates)" if seen.near else ""
        typer.echo(
            f"{_count(seen.media, 'media item')} seen here before are on the list{near}: "
            f"{_count(len(seen.raised), 'queued target')} moved up"
        )
    if summary.rejected_count:
        shown = summary.rejected if show_rejected else summary.rejected[:SHOWN_REJECTED]
        for line_no, reason in shown:
            typer.echo(f"  rejected {noun} {line_no}: {reason}")
        hidden = summary.rejected_count - len(shown)
        if hidden:
            more = (
                f"(only the first {REJECTED_KEPT:,} are kept)"
                if show_rejected
                else "(--show-rejected prints them)"
            )
            typer.echo(f"  ... and {hidden:,} more {more}")
    if summary.entries == 0:
        if summary.rejected_count:
            raise fail("no line of the file was usable; nothing imported")
        raise fail("the file holds no entries; nothing imported")


def _audit(session: Any, name: str, change: str, **details: str | int) -> None:
    """Hash list changes made at the console are audited like those of the staff pages."""
    from hotline import audit
    from hotline.db import utcnow

    audit.record(
        session,
        action=audit.Action.admin_change,
        actor=audit.console_actor(),
        object_type="hash_list",
        object_id=name,
        details={"change": change, **details},
        now=utcnow(),
    )


def _moved(moved: list[int]) -> str:
    return f"; {_count(len(moved), 'queued target')} ranked again" if moved else ""


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


@hashes_app.command("lists")
def lists(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show the hash lists: enabled or not, the own list, entries (files) and how many of
    them carry each hash type."""
    from hotline.db import session_scope
    from triage.hashlists import list_lists

    with session_scope() as session:
        infos = list_lists(session)
    if as_json:
        for info in infos:
            typer.echo(
                json.dumps(
                    {
                        "name": info.name,
                        "description": info.description,
                        "enabled": info.enabled,
                        "own": info.own,
                        "counts": info.counts,
                        "entries": info.entries,
                        "created_at": info.created_at.isoformat(),
                    }
                )
            )
        return
    from triage.models import HashType

    types = [t.value for t in HashType if any(t.value in i.counts for i in infos)]
    table = Table(box=None, pad_edge=False)
    table.add_column("name", overflow="fold")
    table.add_column("enabled")
    table.add_column("own")
    for name in types:
        table.add_column(name, justify="right")
    table.add_column("entries", justify="right")
    table.add_column("created")
    for info in infos:
        table.add_row(
            info.name,
            "yes" if info.enabled else "no",
            "yes" if info.own else "",
            *(f"{info.counts.get(name, 0):,}" for name in types),
            f"{info.entries:,}",
            info.created_at.strftime("%Y-%m-%d"),
        )
    console = Console(soft_wrap=True)
    if not console.is_terminal:  # piped (grep, a file): every column whole, never cut
        console = Console(soft_wrap=True, width=1000)
    console.print(table)


def _set_enabled(name: str, enabled: bool) -> None:
    from hotline.db import session_scope, utcnow
    from triage.hashlists import get_list, set_enabled
    from triage.matches import SeenOnList, match_seen_media
    from triage.rerank import rerank, showing_list

    seen = SeenOnList(0, [])
    try:
        with session_scope() as session:
            was = get_list(session, name).enabled
            changed = set_enabled(session, name, enabled)
            if enabled and not was and not changed.own:
                # Media seen while the list was off were not matched against it.
                seen = match_seen_media(session, changed.id or 0, now=utcnow())
            moved = sorted(
                set(seen.raised) | set(rerank(session, showing_list(session, changed.id or 0)))
            )
            _audit(session, name, "enabled" if enabled else "disabled", reranked=len(moved))
    except HotlineError as exc:
        raise fail(exc.detail) from None
    typer.echo(f"list {name!r} {'enabled' if enabled else 'disabled'}{_moved(moved)}")


@hashes_app.command("enable")
def enable(name: ListName) -> None:
    """Match media against this list again."""
    _set_enabled(name, True)


@hashes_app.command("disable")
def disable(name: ListName) -> None:
    """Stop matching media against this list; its hashes are kept."""
    _set_enabled(name, False)


@hashes_app.command("remove")
def remove(
    name: ListName,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an imported list with all its entries (the hotline's own list cannot be)."""
    from hotline.db import session_scope
    from triage.hashlists import OwnListReadOnly, get_list, list_info, remove_list
    from triage.rerank import rerank, showing_list

    try:
        with session_scope() as session:
            info = list_info(session, name)
        if info.own:
            raise OwnListReadOnly()
        if not yes and not typer.confirm(f"Remove list {name!r} and its {info.entries:,} entries?"):
            raise fail("nothing removed")
        with session_scope() as session:
            showing = showing_list(session, get_list(session, name).id or 0)
            removed = remove_list(session, name)
            moved = rerank(session, showing)
            _audit(session, name, "removed", entries=removed, reranked=len(moved))
    except HotlineError as exc:
        raise fail(exc.detail) from None
    typer.echo(f"list {name!r} removed with {removed:,} entries{_moved(moved)}")


if __name__ == "__main__":
    from hotline.console import run

    run(hashes_app, prog_name="hotline hashes")
