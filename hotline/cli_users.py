"""``hotline users``: create staff accounts, disable them, reset their second factor, list them.

Wiring only; mounted by ``hotline.cli`` (``app.add_typer(users_app, name="users")``) and
imported by nothing else. The logic is in ``hotline.auth``. Passwords are read from
standard input or a hidden prompt, never from the command line.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from hotline.errors import HotlineError
from hotline.roles import Role

users_app = typer.Typer(
    help="Staff accounts (analyst, supervisor, admin, auditor) with a TOTP second factor.",
    no_args_is_help=True,
    add_completion=False,
)

Email = Annotated[str, typer.Argument(help="The staff member's email address.", show_default=False)]
PrintURI = Annotated[
    bool,
    typer.Option(
        "--print-totp-uri",
        help="Print the otpauth:// URI of the new TOTP secret (to enrol an authenticator "
        "app; treat it like a password).",
    ),
]

PENDING = (
    "TOTP secret created but not shown: its owner sets up the authenticator app at the "
    "first sign-in at /staff/login (QR code), or hand it over with "
    "'hotline users reset-2fa {email} --print-totp-uri'."
)


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        # One line; only the line break is stripped, spaces are part of the password.
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise fail("no terminal to ask for the password on: use --password-stdin", 2)
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def _audit(session: Any, user: Any, change: str, **details: str) -> None:
    """Admin changes made at the console are audited like those made in the staff pages;
    the actor is the operating-system account that ran the command."""
    from hotline import audit
    from hotline.db import utcnow

    audit.record(
        session,
        action=audit.Action.admin_change,
        actor=audit.console_actor(),
        object_type="staff_user",
        object_id=user.id,
        details={"change": change, **details},
        now=utcnow(),
    )


@users_app.command("add")
def add(
    email: Email,
    role: Annotated[
        Role, typer.Option(help="What the account may do (see docs/access.md).", show_default=False)
    ],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    print_totp_uri: PrintURI = False,
) -> None:
    """Create a staff account. Every account gets a TOTP secret; sign-in needs its codes."""
    from hotline import auth
    from hotline.db import session_scope, utcnow

    password = _read_password(password_stdin)
    try:
        with session_scope() as session:
            user, uri = auth.create_user(
                session,
                email,
                role,
                password,
                now=utcnow(),
                cipher=auth.configured_staff_cipher(),
            )
            _audit(session, user, "user_created", role=user.role.value)
    except HotlineError as exc:
        raise fail(exc.detail) from None
    typer.echo(f"created {user.email} ({user.role.value})")
    typer.echo(uri if print_totp_uri else PENDING.format(email=user.email))


@users_app.command("disable")
def disable(email: Email) -> None:
    """Disable an account: it can no longer sign in, and its tokens stop working."""
    from hotline import auth
    from hotline.db import session_scope

    try:
        with session_scope() as session:
            user = auth.disable_user(session, email)
            _audit(session, user, "disabled")
    except HotlineError as exc:
        raise fail(exc.detail) from None
    typer.echo(f"disabled {user.email}")


@users_app.command("reset-2fa")
def reset_2fa(email: Email, print_totp_uri: PrintURI = False) -> None:
    """Replace an account's TOTP secret (lost phone, new enrolment); its tokens are revoked."""
    from hotline import auth
    from hotline.db import session_scope

    try:
        with session_scope() as session:
            user, uri = auth.reset_2fa(session, email, cipher=auth.configured_staff_cipher())
            _audit(session, user, "second_factor_reset")
    except HotlineError as exc:
        raise fail(exc.detail) from None
    typer.echo(f"new TOTP secret for {user.email}")
    typer.echo(uri if print_totp_uri else PENDING.format(email=user.email))


@users_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show the staff accounts: role, whether disabled, locked or enrolled in TOTP."""
    from hotline import auth
    from hotline.db import session_scope, utcnow

    now = utcnow()
    with session_scope() as session:
        users = auth.list_users(session)
    for user in users:
        row = {
            "email": user.email,
            "role": user.role.value,
            "disabled": user.disabled,
            "locked": bool(user.locked_until and user.locked_until > now),
            "totp_enrolled": user.totp_enrolled_at is not None,
            "created_at": user.created_at.isoformat(),
        }
        if as_json:
            typer.echo(json.dumps(row))
        else:
            flags = [k for k in ("disabled", "locked") if row[k]]
            flags.append("enrolled" if row["totp_enrolled"] else "not enrolled")
            typer.echo(f"{user.email:<40} {user.role.value:<10} {', '.join(flags)}")


if __name__ == "__main__":
    from hotline.console import run

    run(users_app)
