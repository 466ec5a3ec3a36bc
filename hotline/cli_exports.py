"""``hotline exports``: the URL list and the hash list for partners, as files.

Wiring only; imported by ``hotline.cli`` (``app.add_typer(exports_app, name="exports")``)
and by nothing else. The logic is in ``partners.exports``; docs/exports.md describes the
formats and how a partner verifies the signature.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from hotline.errors import HotlineError

exports_app = typer.Typer(
    help="Exports for partners: the URL list and the hash list (CSV, JSON lines, VICS).",
    no_args_is_help=True,
    add_completion=False,
)

FormatOption = Annotated[
    str, typer.Option("--format", "-f", help="csv, jsonl or vics (vics: hash list only).")
]
SinceOption = Annotated[
    str | None,
    typer.Option(help="Only rows added or changed after this ISO 8601 time (incremental)."),
]
OutOption = Annotated[
    Path | None,
    typer.Option(
        "--out", "-o", help="Write to this file (default: standard output).", dir_okay=False
    ),
]
SignOption = Annotated[
    str | None,
    typer.Option(
        "--sign",
        help="Sign for this partner (name or id) with its signing secrets; writes FILE.sig "
        "next to --out and audits the export as given to that partner.",
        show_default=False,
    ),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _run(
    kind: Literal["urls", "hashes"], fmt: str, since: str | None, out: Path | None, sign: str | None
) -> None:
    from hotline import audit
    from hotline.db import session_scope, utcnow
    from partners import exports, registry

    if fmt not in exports.FORMATS:
        raise fail(f"unknown format {fmt!r}; one of: {', '.join(exports.FORMATS)}", 2)
    if sign is not None and out is None:
        raise fail("--sign writes FILE.sig next to the export: give --out FILE", 2)
    now = utcnow()
    try:
        with session_scope() as session:
            parsed = exports.parse_since(since)
            if sign is not None:
                partner = registry.find_partner(session, sign)
                made, headers = exports.for_partner(
                    session,
                    partner,
                    kind,
                    fmt,
                    since=parsed,
                    now=now,
                    cipher=registry.partner_cipher(),
                )
            else:
                made = exports.export(session, kind, fmt, now=now, since=parsed)
                headers = {}
                audit.record(
                    session,
                    action=audit.Action.exported,
                    actor="cli",
                    object_type="export",
                    object_id=kind,
                    details={
                        "list": kind,
                        "format": fmt,
                        "since": parsed.isoformat() if parsed else None,
                        "rows": made.rows,
                    },
                    now=now,
                )
    except HotlineError as exc:
        raise fail(exc.detail) from None
    if out is None:
        sys.stdout.buffer.write(made.body)
        sys.stdout.buffer.flush()
    else:
        out.write_bytes(made.body)
        if headers:
            signature = out.with_name(out.name + ".sig")
            signature.write_text(json.dumps(headers, indent=2) + "\n", encoding="utf-8")
        typer.echo(
            f"{made.rows:,} row(s) written to {out}"
            + (f" (signature in {out.name}.sig)" if headers else "")
            + f"; as of {made.as_of.isoformat()}",
            err=True,
        )


@exports_app.command("urls")
def urls(
    fmt: FormatOption = "csv",
    since: SinceOption = None,
    out: OutOption = None,
    sign: SignOption = None,
) -> None:
    """The URL list: confirmed targets still online (removed ones left out)."""
    _run("urls", fmt, since, out, sign)


@exports_app.command("hashes")
def hashes(
    fmt: FormatOption = "csv",
    since: SinceOption = None,
    out: OutOption = None,
    sign: SignOption = None,
) -> None:
    """The hash list: SHA-256, SHA-1, MD5, PDQ and pHash of confirmed media, with category."""
    _run("hashes", fmt, since, out, sign)


if __name__ == "__main__":
    from hotline.console import run

    run(exports_app, prog_name="hotline exports")
