"""Every setting of the hotline, read from ``HOTLINE_*`` environment variables.

Each field has a default that works on a fresh machine (SQLite file and a
filesystem broker under ``data_dir``) and a description; the README's settings
table is checked against this class by a test. Production (``HOTLINE_ENV=production``)
refuses the development fallbacks that would be unsafe or process-local.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _split_networks(value: object) -> object:
    if isinstance(value, str):
        return [
            ipaddress.ip_network(part.strip(), strict=False)
            for part in value.split(",")
            if part.strip()
        ]
    return value


class Settings(BaseSettings):
    # A refused setting is named, never echoed: the input holds keys and passwords.
    model_config = SettingsConfigDict(
        env_prefix="HOTLINE_", extra="ignore", hide_input_in_errors=True
    )

    env: Literal["development", "production"] = Field(
        "development",
        description="`production` refuses development fallbacks (generated keys, "
        "SQLite, the filesystem broker, in-memory rate limits).",
    )
    data_dir: Path = Field(
        Path("hotline-data"),
        description="Directory for the embedded runtime's files: SQLite database, "
        "filesystem broker, generated contact key, beat schedule.",
    )
    database_url: str = Field(
        "",
        description="SQLAlchemy URL, e.g. `postgresql+psycopg://user@db/hotline`. "
        "Empty: SQLite file `hotline.sqlite3` in the data directory.",
    )
    broker_url: str = Field(
        "",
        description="Celery broker, e.g. `redis://redis:6379/0`. Empty: kombu's "
        "filesystem transport under `<data dir>/broker` (one machine only).",
    )
    redis_url: str = Field(
        "",
        description="Redis for rate-limit counters and the rotating rate-limit secret. "
        "Empty: kept in the API process's memory (one process only).",
    )
    contact_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated Fernet keys encrypting reporters' optional contact "
        "details; the first encrypts, all decrypt (rotation). Empty in development: a key "
        "is generated in `<data dir>/contact.key`.",
    )
    staff_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated Fernet keys encrypting staff TOTP secrets; the first "
        "encrypts, all decrypt. Empty in development: a key is generated in "
        "`<data dir>/staff.key`.",
    )
    partner_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated Fernet keys encrypting the secrets shared with partners "
        "(signing secrets, API keys we send); the first encrypts, all decrypt. Empty: "
        "`HOTLINE_STAFF_KEYS` (or its development key) encrypts them too.",
    )
    staff_token_minutes: int = Field(
        15, ge=1, le=720, description="Lifetime of a staff API bearer token."
    )
    claim_lease_seconds: int = Field(
        900,
        ge=60,
        description="How long an analyst's claim on a queue item lasts unless renewed.",
    )
    staff_session_idle_minutes: int = Field(
        30,
        ge=1,
        le=1440,
        description="A staff browser session ends after this long without a request.",
    )
    staff_session_max_hours: int = Field(
        12,
        ge=1,
        le=168,
        description="A staff browser session ends this long after sign-in in any case.",
    )
    second_opinion: Literal["none", "national", "always"] = Field(
        "national",
        description="When a second analyst (or a supervisor) must confirm an illegal verdict "
        "before a target is `confirmed`: `none`; `national` (verdicts resting on national "
        "law only); `always`.",
    )
    safe_view_blur_radius: float = Field(
        24,
        ge=4,
        le=200,
        description="Gaussian blur radius of the safe view's default rendering, in pixels "
        "of an image scaled to 1024 pixels on its long side.",
    )
    safe_view_rate_limit: str = Field(
        "300/minute;5000/hour",
        description="Safe views (each fetches a media item afresh and decodes it in the "
        "API process) allowed per staff account, in `limits` notation separated by `;`, "
        "or `off`. The default lets an analyst open several pages of 50 media a minute "
        "and stops a runaway script or a stolen session from tying up the API.",
    )
    contact_retention_days: int = Field(
        90, ge=1, description="Days after which a reporter's contact details are erased."
    )
    rate_limit: str = Field(
        "20/minute;200/day",
        description="Report submissions allowed per client, in `limits` notation "
        "separated by `;`, or `off`.",
    )
    rate_limit_rotation_seconds: int = Field(
        86400,
        ge=60,
        description="Lifetime of the secret that keys the hash of client addresses; "
        "counters restart when it rotates.",
    )
    trusted_proxies: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated addresses or networks of reverse proxies whose "
        "`X-Forwarded-For` is believed. Empty: the header is ignored.",
    )
    max_body_bytes: int = Field(
        32768, ge=1024, description="Largest request body accepted; larger is refused with 413."
    )
    max_url_length: int = Field(
        4096, ge=256, description="Longest reported URL accepted, in characters."
    )
    fetch_allow_networks: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated networks that intake and the fetcher accept although "
        "they are not public (tests and demonstrations, e.g. `127.0.0.0/8`). Keep empty "
        "in production.",
    )
    fetch_ports: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [80, 443, 8080, 8443],
        description="Comma-separated ports (or ranges such as `8000-8999`) the fetcher may "
        "connect to, also after a redirect.",
    )
    fetch_max_bytes: int = Field(
        25_000_000,
        ge=1024,
        description="Largest response body the fetcher reads, counted after decompression.",
    )
    fetch_connect_timeout_seconds: float = Field(
        5, gt=0, description="Deadline for connecting (TCP and TLS) to a reported host."
    )
    fetch_read_timeout_seconds: float = Field(
        10, gt=0, description="Deadline for each read from a reported host."
    )
    fetch_total_timeout_seconds: float = Field(
        30,
        gt=0,
        description="Deadline for a whole fetch including redirects; a server dripping "
        "bytes is cut here.",
    )
    fetch_max_redirects: int = Field(5, ge=0, le=20, description="Redirect hops followed.")
    fetch_user_agent: str = Field(
        "Mozilla/5.0 (compatible; Hotline/0.1)",
        description="User-Agent header of the fetcher.",
    )
    page_media_limit: int = Field(
        50, ge=1, description="Media links fetched from one reported page, at most."
    )
    image_max_pixels: int = Field(
        100_000_000,
        ge=1_000_000,
        description="Images with more pixels are not decoded (decompression-bomb limit); "
        "a WebP counts three times, as it takes three times the memory to decode. Such an "
        "image keeps its file hashes only.",
    )
    image_max_frames: int = Field(
        20,
        ge=1,
        le=100_000,
        description="Frames of an animation that are counted, at most (more frames than "
        "this are noted as `frames_capped`).",
    )
    image_hashed_frames: int = Field(
        8,
        ge=1,
        description="Frames of an animation that get a pHash and PDQ and are matched, at "
        "most: the first, and the others spread over the frames counted (1: the first "
        "only). Frames decoded to reach them count against `HOTLINE_IMAGE_MAX_PIXELS`.",
    )
    phash_radius: int = Field(
        8,
        ge=0,
        le=32,
        description="Hamming distance (of 64 bits) for a pHash near match. A pHash with "
        "fewer than 16 or more than 48 bits set (a flat or one-axis picture: a spacer, a "
        "banner) is stored but not matched.",
    )
    pdq_radius: int = Field(
        31, ge=0, le=128, description="Hamming distance (of 256 bits) for a PDQ near match."
    )
    pdq_min_quality: int = Field(
        50, ge=0, le=100, description="PDQ hashes of lower quality are stored but not matched."
    )
    near_match_limit: int = Field(
        20,
        ge=1,
        le=10_000,
        description="Near matches a media item records, at most, per hash type: to media "
        "seen here before, and to the entries of each list (the hotline's own too: a "
        "reversal gives the copies that lose one the next nearest). The nearest are kept "
        "(the earliest first among equals); all are searched. A picture seen N times "
        "would otherwise add N matches for each further copy (10,000 copies: 10,000 rows "
        "and about a second per copy).",
    )
    neardup_refresh_seconds: float = Field(
        2,
        gt=0,
        description="How often a worker loads hashes added by other workers and imports.",
    )
    neardup_catchup_seconds: float = Field(
        60,
        ge=0,
        description="Media first seen within this many seconds are matched again by beat, "
        "every quarter of it, for the near duplicates and list entries two workers (or a "
        "worker and a list import) recorded at the same time and so missed. At least 10 "
        "and 4x `HOTLINE_NEARDUP_REFRESH_SECONDS`; 0 turns the catch-up off.",
    )
    geoip_data_file: str = Field(
        "",
        description="geoip2fast data file (`.dat.gz`) for the hosting country and "
        "operator; it must exist. Empty: the file shipped with the geoip2fast package "
        "(update by upgrading it).",
    )
    asn_data_file: str = Field(
        "",
        description="A MaxMind-format ASN database (`.mmdb`: GeoLite2-ASN, or DB-IP's "
        'free "IP to ASN Lite") for the AS number and operator of the hosting '
        "address; it must exist. Empty: no AS numbers (geoip2fast names the operator). "
        "Update by replacing the file and restarting.",
    )
    hosting_overrides: Annotated[list[tuple[IPNetwork, str]], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated `network=COUNTRY` pairs (e.g. `127.0.0.0/8=PL`) that "
        "the hosting lookup answers before the geolocation data: for tests and "
        "demonstrations that stand in a local server for a site abroad. Refused in "
        "production.",
    )
    process_max_attempts: int = Field(
        3,
        ge=1,
        description="Fetch attempts of a target before it is marked unreachable.",
    )
    process_deadline_seconds: float = Field(
        240,
        gt=0,
        description="Time budget for processing one target (page and its media); media not "
        "reached by then are skipped.",
    )
    process_lease_seconds: float = Field(
        600,
        gt=0,
        description="A target a worker started but did not finish within this time (the "
        "worker died) is handed to another worker by the sweep.",
    )
    process_retry_delay_seconds: float = Field(
        20, ge=0, description="First delay between fetch attempts; doubles each attempt."
    )
    pending_requeue_after_seconds: int = Field(
        300,
        ge=1,
        description="A target still `pending` this long after its last hand-over to the "
        "workers is handed over again by the sweep.",
    )
    sweep_interval_seconds: float = Field(
        60, gt=0, description="How often beat runs the sweep of pending targets."
    )
    broker_publish_timeout_seconds: float = Field(
        2.0,
        gt=0,
        description="How long the API waits for the broker when handing over a target; "
        "on failure the report stays accepted and the sweep retries.",
    )
    worker_concurrency: int = Field(
        2, ge=1, description="Worker processes started by `hotline serve`."
    )
    default_language: str = Field(
        "en", description="Language of the public pages when the browser asks for none we have."
    )
    site_name: str = Field("Hotline", description="Name of the hotline shown on public pages.")
    quick_exit_url: str = Field(
        "https://www.google.com/",
        description="Where the quick-exit button of the public pages leads.",
    )
    log_level: str = Field("INFO", description="Log level of all processes.")
    secure_cookies: bool = Field(
        True,
        description="Mark staff session cookies `Secure` (sent over HTTPS only); turn off "
        "only to sign in over plain http on a laptop. Production refuses it off.",
    )

    home_country: str = Field(
        "UA",
        pattern=r"^[A-Z]{2}$",
        description="ISO 3166-1 alpha-2 code of the hotline's country: content hosted here "
        "goes to national law enforcement and a notice to the hosting provider; content "
        "hosted elsewhere to that country's partner hotline.",
    )
    law_enforcement_hold_minutes: int = Field(
        0,
        ge=0,
        description="Minutes a notice to a hosting provider waits after law enforcement was "
        "told, so an investigation is not spoiled; law enforcement can release or extend "
        "the hold through the partner API.",
    )
    law_enforcement_hold_max_days: int = Field(
        30,
        ge=0,
        description="Law enforcement can extend the hold on a notice through the partner API "
        "to at most this many days after the notice was decided.",
    )
    forward_abroad_to_law_enforcement: bool = Field(
        False,
        description="Tell national law enforcement of content hosted abroad as well (besides "
        "the partner hotline of the hosting country).",
    )
    partner_secret_overlap_hours: int = Field(
        168,
        ge=0,
        description="After `hotline partners rotate-secret`, the old secret stays valid this "
        "long, so partners can switch without losing a message.",
    )
    delivery_timeout_seconds: float = Field(
        15, gt=0, description="Deadline of one delivery attempt to a partner's endpoint."
    )
    delivery_retry_base_seconds: float = Field(
        60,
        gt=0,
        description="Delay before the second delivery attempt; each further delay doubles "
        "(with jitter) up to `HOTLINE_DELIVERY_RETRY_MAX_DELAY_SECONDS`.",
    )
    delivery_retry_max_delay_seconds: float = Field(
        21600, gt=0, description="Longest delay between two delivery attempts."
    )
    delivery_max_attempts: int = Field(
        16,
        ge=1,
        description="Delivery attempts before a delivery goes to the dead-letter list; the "
        "defaults spread them over more than 24 hours.",
    )
    delivery_sweep_after_seconds: int = Field(
        300,
        ge=1,
        description="A delivery whose attempt is this overdue (its message was lost, or its "
        "worker died) is handed to the workers again by the sweep.",
    )
    recheck_interval_seconds: float = Field(
        300,
        gt=0,
        description="How often beat looks for re-checks that are due (confirmed targets are "
        "re-fetched 1 h, 6 h, 24 h and 72 h after confirmation, then daily).",
    )
    recheck_max_age_days: int = Field(
        90,
        ge=1,
        description="Confirmed targets are re-checked daily until removed or until this many "
        "days after confirmation.",
    )
    recheck_after_removal_days: int = Field(
        14,
        ge=0,
        description="A removed target is still re-checked on the schedule this many days "
        "after its removal, so that a return is noticed (and it is re-opened).",
    )
    recheck_batch_size: int = Field(
        50, ge=1, description="Re-checks handed to the workers per beat run at most."
    )
    notice_window_minutes: float = Field(
        15,
        ge=0,
        description="A notice to a hosting provider collects the URLs due for that abuse "
        "contact for this long after the first one, then goes out as one message.",
    )
    notice_repeat_hours: float = Field(
        24,
        gt=0,
        description="A notice is repeated this long after the last one while a URL it names "
        "is still online.",
    )
    notice_max_repeats: int = Field(
        6, ge=0, description="Re-notices per URL at most, after the first notice."
    )
    smtp_host: str = Field(
        "",
        description="SMTP server that sends notices by e-mail. Empty: e-mail notices are "
        "retried like an unreachable server (`smtp_not_configured`), then fail.",
    )
    smtp_port: int = Field(
        587, ge=1, le=65535, description="Port of the SMTP server (587 STARTTLS, 465 SSL)."
    )
    smtp_security: Literal["starttls", "ssl", "none"] = Field(
        "starttls",
        description="`starttls` (upgrade the connection, required), `ssl` (TLS from the "
        "start) or `none` (plain; a local relay only). Production refuses `none`.",
    )
    smtp_user: str = Field("", description="SMTP login; empty: no authentication.")
    smtp_password: SecretStr = Field(SecretStr(""), description="SMTP password.")
    smtp_from: str = Field(
        "hotline@localhost",
        description="Sender address of notices (also the domain of their Message-ID).",
    )
    smtp_timeout_seconds: float = Field(30, gt=0, description="Deadline of one SMTP conversation.")
    partner_replay_days: int = Field(
        30,
        ge=1,
        description="Days the answer to a partner's API call is kept, so that a retry with "
        "the same `webhook-id` gets it again instead of making a second change; then it is "
        "erased.",
    )
    partner_max_body_bytes: int = Field(
        1_048_576,
        ge=1024,
        description="Largest request body accepted under `/api/v1/partner/` (bulk reports of "
        "up to 500 URLs); elsewhere `HOTLINE_MAX_BODY_BYTES` applies.",
    )

    @field_validator("trusted_proxies", "fetch_allow_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        return _split_networks(value)

    @field_validator("hosting_overrides", mode="before")
    @classmethod
    def _overrides(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            network, _, country = part.partition("=")
            code = country.strip().upper()
            if len(code) != 2 or not code.isalpha():
                raise ValueError(
                    "HOTLINE_HOSTING_OVERRIDES takes network=COUNTRY pairs, e.g. 127.0.0.0/8=PL"
                )
            pairs.append((ipaddress.ip_network(network.strip(), strict=False), code))
        return pairs

    @field_validator("geoip_data_file", "asn_data_file")
    @classmethod
    def _data_file(cls, value: str, info: ValidationInfo) -> str:
        # Checked at start: a worker without its hosting data would fail every target.
        if value and not Path(value).expanduser().is_file():
            raise ValueError(f"HOTLINE_{str(info.field_name).upper()}: no such file: {value}")
        return value

    @field_validator("fetch_ports", mode="before")
    @classmethod
    def _ports(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        ports: list[int] = []
        for part in filter(None, (p.strip() for p in value.split(","))):
            low, dash, high = part.partition("-")
            try:
                first = int(low)
                last = int(high) if dash else first
            except ValueError:
                raise ValueError(
                    f"HOTLINE_FETCH_PORTS: {part!r} is not a port or a range such as 8000-8999"
                ) from None
            if not 1 <= first <= last <= 65535:
                raise ValueError(
                    f"HOTLINE_FETCH_PORTS: {part!r} is not within 1-65535, low to high"
                )
            ports.extend(range(first, last + 1))
        if not ports:
            raise ValueError("HOTLINE_FETCH_PORTS names no port: every fetch would be refused")
        return ports

    @field_validator("contact_keys", "staff_keys", "partner_keys")
    @classmethod
    def _fernet_keys(cls, value: SecretStr) -> SecretStr:
        from cryptography.fernet import Fernet

        for key in filter(None, (k.strip() for k in value.get_secret_value().split(","))):
            try:
                Fernet(key.encode())
            except ValueError:
                raise ValueError(
                    "HOTLINE_CONTACT_KEYS, HOTLINE_STAFF_KEYS and HOTLINE_PARTNER_KEYS must "
                    "be Fernet keys "
                    "(32 url-safe base64-encoded bytes)"
                ) from None
        return value

    @model_validator(mode="after")
    def _catch_up_window(self) -> Settings:
        # The window must outlast a worker's stale index and its record transaction, with
        # a run of the catch-up (every quarter of it) after both.
        window = self.neardup_catchup_seconds
        if window and window < max(10.0, 4 * self.neardup_refresh_seconds):
            raise ValueError(
                "HOTLINE_NEARDUP_CATCHUP_SECONDS must be 0 (off) or at least 10 and 4x "
                "HOTLINE_NEARDUP_REFRESH_SECONDS"
            )
        return self

    @model_validator(mode="after")
    def _production_refuses_development_fallbacks(self) -> Settings:
        if self.env != "production":
            return self
        missing = [
            name
            for name, empty in (
                (
                    "HOTLINE_DATABASE_URL",
                    not self.database_url or self.database_url.startswith("sqlite"),
                ),
                (
                    "HOTLINE_BROKER_URL",
                    not self.broker_url or self.broker_url.startswith("filesystem"),
                ),
                (
                    "HOTLINE_REDIS_URL",
                    not self.redis_url and self.rate_limit.strip().lower() != "off",
                ),
                ("HOTLINE_CONTACT_KEYS", not self.contact_keys.get_secret_value()),
                ("HOTLINE_STAFF_KEYS", not self.staff_keys.get_secret_value()),
            )
            if empty
        ]
        if self.fetch_allow_networks:
            raise ValueError(
                "HOTLINE_FETCH_ALLOW_NETWORKS must be empty in production: it lets the "
                "fetcher reach non-public addresses"
            )
        if self.hosting_overrides:
            raise ValueError(
                "HOTLINE_HOSTING_OVERRIDES must be empty in production: it makes up where "
                "content is hosted, and so who hears of it"
            )
        if self.smtp_host and self.smtp_security == "none":
            raise ValueError(
                "HOTLINE_SMTP_SECURITY=none is refused in production: notices name the "
                "URLs and travel encrypted"
            )
        if not self.secure_cookies:
            raise ValueError(
                "HOTLINE_SECURE_COOKIES must stay on in production: staff sessions travel "
                "over HTTPS only"
            )
        if missing:
            raise ValueError(
                "production needs shared services and real secrets; set " + ", ".join(missing)
            )
        return self

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_data_dir / 'hotline.sqlite3'}"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_dir(self) -> Path:
        return self.resolved_data_dir / "broker"


@lru_cache
def get_settings() -> Settings:
    return Settings()
