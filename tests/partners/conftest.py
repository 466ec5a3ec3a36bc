"""Fixtures of the partner tests: confirmed targets as rows, partners, local receivers."""

from __future__ import annotations

import hashlib
import itertools

from sqlmodel import Session

from reporting.models import Target, TargetStatus
from tests.fixtures.receivers import receivers  # noqa: F401
from triage.models import Assessment, Classification, Media, MediaKind, Sighting

_serial = itertools.count(1)


def confirmed_target(
    session: Session,
    *,
    country: str | None,
    asn: int | None = None,
    domain: str = "example.test",
    status: TargetStatus = TargetStatus.confirmed,
) -> Target:
    """A target as the analyst workspace leaves it: confirmed, with one media item
    assessed illegal (baseline) and one assessed not illegal."""
    n = next(_serial)
    url = f"http://www.{domain}/gallery/{n}.html"
    target = Target(
        canonical_url=url,
        url_sha256=hashlib.sha256(url.encode()).hexdigest(),
        host=f"www.{domain}",
        registered_domain=domain,
        status=status,
        hosting_ip="192.0.2.10",
        hosting_country=country,
        hosting_asn=asn,
        hosting_org="Example Hosting",
        report_count=2,
    )
    session.add(target)
    session.flush()
    assert target.id is not None
    for index, classification in enumerate((Classification.baseline, Classification.not_illegal)):
        seed = f"{n}-{index}".encode()
        media = Media(
            sha256=hashlib.sha256(seed).hexdigest(),
            sha1=hashlib.sha1(seed).hexdigest(),  # noqa: S324 - a hash list value, not security
            md5=hashlib.md5(seed).hexdigest(),  # noqa: S324
            phash="8f373714acfcf4d0",
            mime="image/jpeg",
            kind=MediaKind.image,
            size=1234,
            width=64,
            height=48,
        )
        session.add(media)
        session.flush()
        assert media.id is not None
        session.add(
            Sighting(target_id=target.id, media_id=media.id, media_url=f"{url[:-5]}/{index}.jpg")
        )
        session.add(
            Assessment(target_id=target.id, media_id=media.id, classification=classification)
        )
    session.flush()
    return target
