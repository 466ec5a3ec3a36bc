"""``hotline sites``: the sites (registered domains) targets were reported on; flag one as
dedicated to abuse material, leave a note for the analysts.

Wiring only; imported by ``hotline.cli``. The logic is in ``triage.sites``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from hotline.errors import HotlineError

sites_app = typer.Typer(
    help="Sites: registered domains with their counts, flags and notes.",
    no_args_is_help=True,
    add_completion=False,
)

Domain = Annotated[
    str,
    typer.Argument(help="A registered domain, a host under it or a URL on it.", show_default=False),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _line(row: dict[str, Any]) -> str:
    flag = "dedicated" if row["dedicated"] else ""
    note = f"  {row['note']}" if row["note"] else ""
    return (
        f"{row['target_count']:>7}  {row['confirmed_count']:>9}  {flag:<9}  "
        f"{row['registered_domain']}{note}"
    )


def _change(changed: dict[str, Any]) -> str:
    if "dedicated" in changed:
        return "flagged" if changed["dedicated"] else "unflagged"
    return "note"


@sites_app.command("list")
def sites_list(
    flagged: Annotated[bool, typer.Option(help="Only sites flagged as dedicated.")] = False,
    confirmed: Annotated[bool, typer.Option(help="Only sites with confirmed targets.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List sites: flagged first, then by confirmed and reported targets."""
    from hotline.db import session_scope
    from triage.sites import describe_site, list_sites

    with session_scope() as session:
        sites, total = list_sites(session, flagged=flagged, confirmed=confirmed, limit=limit)
        rows = [describe_site(site) for site in sites]
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    if rows:
        typer.echo(f"{'targets':>7}  {'confirmed':>9}  {'flag':<9}  domain  note")
    for row in rows:
        typer.echo(_line(row))
    typer.echo(f"{len(rows)} shown of {total}", err=True)


@sites_app.command("show")
def sites_show(
    domain: Domain,
    as_json: Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")] = False,
) -> None:
    """Show one site: counts, flag and note."""
    from hotline.db import session_scope
    from triage.sites import UnknownSite, describe_site, get_site

    try:
        with session_scope() as session:
            row = describe_site(get_site(session, domain))
    except UnknownSite as exc:
        raise fail(exc.detail) from None
    except HotlineError as exc:
        raise fail(exc.detail, 2) from None
    if as_json:
        typer.echo(json.dumps(row, indent=2))
        return
    for label, value in (
        ("domain", row["registered_domain"]),
        ("targets", row["target_count"]),
        ("confirmed", row["confirmed_count"]),
        ("dedicated", "yes" if row["dedicated"] else "no"),
        ("note", row["note"] or "-"),
        ("first seen", row["first_seen_at"]),
    ):
        typer.echo(f"{label:>10}  {value}")


@sites_app.command("flag")
def sites_flag(
    domain: Domain,
    dedicated: Annotated[
        bool | None,
        typer.Option(
            "--dedicated/--not-dedicated",
            help="Flag the site as dedicated to abuse material (its queued and future "
            "targets rank in the site tier), or take the flag away.",
            show_default=False,
        ),
    ] = None,
    note: Annotated[
        str | None,
        typer.Option(
            help="A note the analysts see on the site ('' clears it).", show_default=False
        ),
    ] = None,
) -> None:
    """Flag a site, or take the flag away; set or clear its note. A domain not seen yet is
    added, so its first report already ranks in the site tier."""
    from hotline import audit
    from hotline.db import session_scope, utcnow
    from triage.sites import flag_site

    if dedicated is None and note is None:
        raise fail("nothing to change: give --dedicated, --not-dedicated or --note", 2)
    try:
        with session_scope() as session:
            done = flag_site(session, domain, dedicated=dedicated, note=note, now=utcnow())
            name = done.domain
            if done.changed:
                audit.record(
                    session,
                    action=audit.Action.admin_change,
                    actor=audit.console_actor(),
                    object_type="site",
                    object_id=name,
                    details={"change": _change(done.changed), **done.changed}
                    | {"reranked": len(done.moved)},
                    now=utcnow(),
                )
    except HotlineError as exc:
        raise fail(exc.detail, 2) from None
    if not done.changed:
        typer.echo(f"site {name!r}: nothing changed")
        return
    state = "dedicated" if done.site is not None and done.site.dedicated else "not flagged"
    moved = len(done.moved)
    ranked = f"; {moved:,} queued target{'s' if moved != 1 else ''} ranked again" if moved else ""
    said = done.changed.get("note")
    note_said = f"; note {said}" if said else ""
    typer.echo(f"site {name!r}: {state}{note_said}{ranked}")


if __name__ == "__main__":
    from hotline.console import run

    run(sites_app, prog_name="hotline sites")
