"""``hotline partners``: the partner registry and the dead-letter list of deliveries.

Wiring only; mounted by ``hotline.cli`` and imported by nothing else. The logic is in
``partners.registry`` and ``partners.delivery``. Secrets are printed once, when made;
a secret given to the hotline is read from standard input, never from the command line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from hotline.errors import HotlineError
from hotline.settings import get_settings
from partners.kinds import PartnerKind, SecretPurpose

partners_app = typer.Typer(
    help="Partners: law enforcement, partner hotlines, hosting providers, the fallback.",
    no_args_is_help=True,
    add_completion=False,
)

NameOrId = Annotated[str, typer.Argument(help="The partner's name or id.", show_default=False)]

SECRET_LABELS = {
    SecretPurpose.outbound_signing: "signing secret (we sign deliveries; give it to the partner)",
    SecretPurpose.inbound_signing: "partner's signing secret (it signs its API calls to us)",
    SecretPurpose.inbound_api_key: "partner's API key (it sends it to our API)",
    SecretPurpose.outbound_api_key: "our API key at the partner",
}


def _actor() -> str:
    # Imported when a command writes, not for --help: hotline.audit loads the database.
    from hotline.audit import console_actor

    return console_actor()


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _production() -> bool:
    return get_settings().env == "production"


def _print_secrets(name: str, issued: dict[SecretPurpose, str]) -> None:
    if not issued:
        return
    typer.echo(f"  secrets of {name} (shown once; hand them over on a secure channel):")
    for purpose, value in issued.items():
        typer.echo(f"    {SECRET_LABELS[purpose]}: {value}")


@partners_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="A unique name, e.g. 'Cyberpolice of Ukraine'.")],
    kind: Annotated[PartnerKind, typer.Option(help="What the partner is.", show_default=False)],
    country: Annotated[
        list[str] | None, typer.Option(help="A country it serves (ISO alpha-2); repeatable.")
    ] = None,
    asn: Annotated[
        list[int] | None, typer.Option(help="An ASN a hosting provider answers for; repeatable.")
    ] = None,
    domain: Annotated[
        list[str] | None,
        typer.Option(help="A registered domain a hosting provider answers for; repeatable."),
    ] = None,
    webhook: Annotated[
        str | None, typer.Option(help="Its webhook URL (https in production).")
    ] = None,
    email: Annotated[str | None, typer.Option(help="Its e-mail address (notices).")] = None,
    language: Annotated[
        list[str] | None, typer.Option(help="A language it reads, preferred first; repeatable.")
    ] = None,
    may_export: Annotated[bool, typer.Option(help="May fetch URL and hash lists.")] = False,
    may_submit: Annotated[bool, typer.Option(help="May submit reports through the API.")] = False,
    note: Annotated[str | None, typer.Option(help="A note for staff.")] = None,
) -> None:
    """Register a partner and print its new secrets (once)."""
    from hotline.db import session_scope, utcnow
    from partners import registry

    data: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "countries": country or [],
        "asns": asn or [],
        "domains": domain or [],
        "webhook_url": webhook,
        "email": email,
        "languages": language or [],
        "may_export": may_export,
        "may_submit": may_submit,
        "note": note,
    }
    try:
        spec = registry.parse_spec(data)
        with session_scope() as session:
            added = registry.add_partner(
                session,
                spec,
                now=utcnow(),
                cipher=registry.partner_cipher(),
                production=_production(),
                actor=_actor(),
            )
            partner_id = added.partner.id
    except HotlineError as exc:
        raise fail(exc.detail) from None
    typer.echo(f"added partner {partner_id}: {spec.name} ({spec.kind.value})")
    _print_secrets(spec.name, added.secrets)


@partners_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show the partners: kind, countries, how they are reached, whether active."""
    from hotline.db import session_scope
    from partners import registry

    with session_scope() as session:
        partners = registry.list_partners(session)
    for p in partners:
        if as_json:
            typer.echo(p.model_dump_json())
            continue
        reach = ", ".join(x for x in (p.webhook_url, p.email) if x)
        where = ",".join(p.countries) or "--"
        matched = ",".join([f"AS{a}" for a in p.asns] + p.domains)
        state = "active" if p.active else f"DISABLED ({p.disabled_reason})"
        typer.echo(
            f"{p.id:>4}  {p.kind.value:<16} {p.name:<36} {where:<12} "
            f"{matched + '  ' if matched else ''}{reach}  {state}"
        )
    if not as_json:
        typer.echo(f"{len(partners)} partner(s)", err=True)


@partners_app.command("disable")
def disable(
    partner: NameOrId,
    reason: Annotated[str, typer.Option(help="Why (kept with the partner and audited).")] = "admin",
) -> None:
    """Stop forwarding to a partner and refuse its API credentials."""
    from hotline.db import session_scope, utcnow
    from partners import registry

    try:
        with session_scope() as session:
            row = registry.find_partner(session, partner)
            registry.disable_partner(session, row, reason=reason, now=utcnow(), actor=_actor())
            name = row.name
    except HotlineError as exc:
        raise fail(exc.detail) from None
    typer.echo(f"disabled {name}")


@partners_app.command("enable")
def enable(partner: NameOrId) -> None:
    """Forward to a disabled partner again (after its endpoint was fixed, say)."""
    from hotline.db import session_scope, utcnow
    from partners import registry

    try:
        with session_scope() as session:
            row = registry.find_partner(session, partner)
            registry.enable_partner(session, row, now=utcnow(), actor=_actor())
            name = row.name
    except HotlineError as exc:
        raise fail(exc.detail) from None
    typer.echo(f"enabled {name}")


@partners_app.command("rotate-secret")
def rotate_secret(
    partner: NameOrId,
    purpose: Annotated[
        SecretPurpose, typer.Option(help="Which secret to replace.")
    ] = SecretPurpose.outbound_signing,
    value_stdin: Annotated[
        bool,
        typer.Option(
            "--value-stdin",
            help="Read the new secret from standard input (one the partner made) instead "
            "of making one.",
        ),
    ] = False,
    overlap_hours: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="How long the old secret stays valid (HOTLINE_PARTNER_SECRET_OVERLAP_HOURS).",
        ),
    ] = None,
) -> None:
    """Replace a secret; the old one stays valid for the overlap, so nothing is lost."""
    from hotline.db import session_scope, utcnow
    from partners import registry

    value = sys.stdin.readline().strip() if value_stdin else None
    if value_stdin and not value:
        raise fail("no secret on standard input", 2)
    hours = get_settings().partner_secret_overlap_hours if overlap_hours is None else overlap_hours
    try:
        with session_scope() as session:
            row = registry.find_partner(session, partner)
            secret = registry.rotate_secret(
                session,
                row,
                purpose=purpose,
                now=utcnow(),
                overlap=dt.timedelta(hours=hours),
                cipher=registry.partner_cipher(),
                value=value,
                actor=_actor(),
            )
            name = row.name
    except HotlineError as exc:
        raise fail(exc.detail) from None
    typer.echo(f"new {purpose.value} secret for {name}; the previous one is valid {hours:g} h more")
    if value is None:
        _print_secrets(name, {purpose: secret})


@partners_app.command("accept-secrets")
def accept_secrets(
    partner: NameOrId,
    overlap_hours: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="How long the secrets they replace stay valid (0 when pairing: the ones "
            "'add' made for this side were never used).",
        ),
    ] = None,
) -> None:
    """Store what a peer hotline's admin handed over, one per line on standard input: its
    signing secret (whsec_..., it signs what it sends us) and the API key it issued us
    (hpk_..., sent with our deliveries to it). See docs/partners.md, pairing."""
    from hotline.db import session_scope, utcnow
    from partners import registry

    purposes = {
        registry.SECRET_PREFIX: SecretPurpose.inbound_signing,
        registry.API_KEY_PREFIX: SecretPurpose.outbound_api_key,
    }
    given: dict[SecretPurpose, str] = {}
    for line in sys.stdin.read().splitlines():
        value = line.strip()
        purpose = next((p for prefix, p in purposes.items() if value.startswith(prefix)), None)
        if value and purpose is None:
            raise fail("expected a signing secret (whsec_...) or an API key (hpk_...)", 2)
        if purpose is not None:
            given[purpose] = value
    if not given:
        raise fail("no secret on standard input", 2)
    hours = get_settings().partner_secret_overlap_hours if overlap_hours is None else overlap_hours
    try:
        with session_scope() as session:
            row = registry.find_partner(session, partner)
            for purpose, value in given.items():
                registry.rotate_secret(
                    session,
                    row,
                    purpose=purpose,
                    now=utcnow(),
                    overlap=dt.timedelta(hours=hours),
                    cipher=registry.partner_cipher(),
                    value=value,
                    actor=_actor(),
                )
            name = row.name
    except HotlineError as exc:
        raise fail(exc.detail) from None
    for purpose in given:
        typer.echo(f"stored {SECRET_LABELS[purpose]} for {name}")


@partners_app.command("load")
def load(
    file: Annotated[
        Path,
        typer.Argument(
            help="A TOML ([[partner]] tables) or YAML (partners: list) file.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
) -> None:
    """Add the partners of FILE that are new and update the others (matched by name).

    Loading the same file again changes nothing; secrets are made only for new partners.
    """
    from hotline.db import session_scope, utcnow
    from partners import registry

    try:
        specs = registry.read_partner_file(file)
        with session_scope() as session:
            results = registry.load_partners(
                session,
                specs,
                now=utcnow(),
                cipher=registry.partner_cipher(),
                production=_production(),
                actor=_actor(),
            )
            shown = [(r.partner.id, r.partner.name, r.created, r.secrets) for r in results]
    except HotlineError as exc:
        raise fail(exc.detail) from None
    for partner_id, name, created, issued in shown:
        typer.echo(f"{'added' if created else 'kept '} {partner_id:>4}  {name}")
        _print_secrets(name, issued)
    typer.echo(f"{sum(1 for s in shown if s[2])} added, {sum(1 for s in shown if not s[2])} kept")


@partners_app.command("deliveries")
def deliveries(
    dead: Annotated[
        bool, typer.Option("--dead", help="The dead-letter list: failed and dead deliveries.")
    ] = False,
    state: Annotated[
        list[str] | None,
        typer.Option(help="Only deliveries in this state (pending, delivered, failed, dead)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List deliveries to partners' webhooks (by default those still pending)."""
    from hotline.db import session_scope
    from partners import delivery
    from partners.models import DeliveryState

    names = list(state or [])
    if dead:
        names += [DeliveryState.failed.value, DeliveryState.dead.value]
    unknown = [n for n in names if n not in DeliveryState.__members__]
    if unknown:
        raise fail(f"unknown state {unknown[0]!r}; one of: {', '.join(DeliveryState)}", 2)
    states = [DeliveryState(n) for n in names] or [DeliveryState.pending]
    with session_scope() as session:
        rows = delivery.list_deliveries(session, states=states, limit=limit)
    for row in rows:
        if as_json:
            typer.echo(json.dumps(dataclasses.asdict(row), default=str))
        else:
            status = row.last_status if row.last_status is not None else "-"
            typer.echo(
                f"{row.id:>6}  {row.state:<9} {row.event:<22} partner {row.partner_id} "
                f"({row.partner})  target {row.target_id}  attempts {row.attempts}  "
                f"last {status} {row.last_error or ''}"
            )
    if not as_json:
        typer.echo(f"{len(rows)} delivery(ies)", err=True)


@partners_app.command("redeliver")
def redeliver(
    delivery_id: Annotated[int, typer.Argument(help="The delivery's id (see 'deliveries').")],
) -> None:
    """Send a failed or dead delivery again, with the same webhook-id, from attempt one."""
    from hotline.db import session_scope, utcnow
    from partners import delivery

    try:
        with session_scope() as session:
            row = delivery.redeliver(session, delivery_id, now=utcnow(), actor=_actor())
            webhook_id = row.webhook_id
    except HotlineError as exc:
        raise fail(exc.detail) from None
    typer.echo(f"delivery {delivery_id} ({webhook_id}) handed to the workers again")


@partners_app.command("recheck")
def recheck(
    target_id: Annotated[int, typer.Argument(help="The confirmed target's id.")],
) -> None:
    """Re-check a confirmed target now, outside its schedule (docs/rechecks.md): fetched
    through the guarded client; a removal is recorded and told like any other."""
    from hotline.db import session_scope, utcnow
    from hotline.memory import seal_content
    from partners import rechecks
    from triage.fetcher import get_fetcher
    from triage.service import Limits

    seal_content()  # this process fetches and hashes the target's media
    settings = get_settings()
    policy = rechecks.RecheckPolicy.from_settings(settings)
    try:
        with session_scope() as session:
            recheck_id = rechecks.due_now(session, target_id, now=utcnow(), policy=policy)
    except HotlineError as exc:
        raise fail(exc.detail) from None
    recorded = rechecks.run_recheck(
        recheck_id,
        units=session_scope,
        fetcher=get_fetcher(),
        limits=Limits.from_settings(settings),
        policy=policy,
        now=utcnow,
    )
    result = recorded.result.value if recorded.result else "not recorded"
    removal = " (removal recorded)" if recorded.removed else ""
    typer.echo(f"target {target_id}: {result}{removal}")


# Notice templates (partners.notices) ------------------------------------------------------

template_app = typer.Typer(
    help="Notice templates: the text of notices to hosting providers, per contact and "
    "language (docs/notices.md).",
    no_args_is_help=True,
    add_completion=False,
)
partners_app.add_typer(template_app, name="template")
Contact = Annotated[
    str | None,
    typer.Argument(
        help="The abuse contact's name or id; none: the hotline's default template.",
        show_default=False,
    ),
]
Language = Annotated[str, typer.Option("--lang", help="Language of the template, e.g. uk.")]


@template_app.command("show")
def template_show(partner: Contact = None, lang: Language = "en") -> None:
    """Print the template a notice in that language would use (the contact's own, the
    hotline's default or the shipped one), in the file format of 'set'."""
    from hotline.db import session_scope
    from partners import notices, registry

    try:
        with session_scope() as session:
            row = registry.find_partner(session, partner) if partner else None
            found = notices.show_template(session, row, lang)
    except HotlineError as exc:
        raise fail(exc.detail) from None
    typer.echo(notices.format_template(found), nl=False)
    typer.echo(f"({found.source} template, language {found.language})", err=True)


@template_app.command("set")
def template_set(
    file: Annotated[
        Path,
        typer.Option(
            exists=True, dir_okay=False, help="'Subject: ...', a blank line, then the body."
        ),
    ],
    partner: Contact = None,
    lang: Language = "en",
) -> None:
    """Store a notice template for a contact (or the default), checked by rendering it."""
    from hotline.db import session_scope, utcnow
    from partners import notices, registry

    policy = notices.NoticePolicy.from_settings(get_settings())
    try:
        text = file.read_text(encoding="utf-8")
        with session_scope() as session:
            row = registry.find_partner(session, partner) if partner else None
            notices.set_template(
                session, row, lang, text, now=utcnow(), policy=policy, actor=_actor()
            )
            name = row.name if row is not None else "the default"
    except HotlineError as exc:
        raise fail(exc.detail) from None
    except UnicodeDecodeError:
        raise fail("The template file is not UTF-8.") from None
    typer.echo(f"notice template ({lang}) of {name} stored")


if __name__ == "__main__":
    from hotline.console import run

    run(partners_app)
