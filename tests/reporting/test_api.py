from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session, col

from reporting.models import Report, Target


def post(client: Any, **body: Any) -> Any:
    return client.post("/api/v1/reports", json={"category": "csam", **body})


def test_report_is_accepted_with_receipt_and_status(client: Any, committed: Any) -> None:
    response = post(client, url="https://Example.com/a/../gallery?id=7#top", description="page 2")
    assert response.status_code == 202
    body = response.json()
    assert len(body["receipt"]) >= 22
    assert body["status_url"] == f"/api/v1/reports/{body['receipt']}"
    status = client.get(body["status_url"])
    assert status.json() == {"status": "received"}
    assert status.headers["cache-control"] == "no-store"
    # Spaces around a description are not counted against its limit.
    padded = post(client, url="https://example.com/b", description=" " + "d" * 2000 + "  ")
    assert padded.status_code == 202, padded.text
    with Session(committed) as session:
        target = session.execute(select(Target).order_by(col(Target.id))).scalars().first()
        report = session.execute(select(Report).order_by(col(Report.id))).scalars().first()
    assert target is not None
    assert report is not None
    assert target.canonical_url == "https://example.com/gallery?id=7"
    assert target.registered_domain == "example.com"
    assert report.receipt_hash != body["receipt"]
    assert body["receipt"] not in str(report.model_dump())


def test_same_url_reported_again_counts_on_one_target(client: Any, committed: Any) -> None:
    first = post(client, url="http://example.org/x")
    second = post(client, url="HTTP://EXAMPLE.org:80/y/../x#frag", category="other")
    assert first.status_code == second.status_code == 202
    assert first.json()["receipt"] != second.json()["receipt"]
    with Session(committed) as session:
        target = session.execute(select(Target)).scalar_one()
        reports = session.execute(select(func.count()).select_from(Report)).scalar_one()
    assert (target.report_count, reports) == (2, 2)


def test_unknown_and_wrong_receipts_answer_alike(client: Any) -> None:
    good = post(client, url="http://example.org/x").json()["receipt"]
    answers = [
        client.get(f"/api/v1/reports/{receipt}")
        for receipt in (good[:-1] + ("A" if good[-1] != "A" else "B"), "x" * 27, "x" * 500, "%00")
    ]
    assert {(a.status_code, a.text) for a in answers} == {
        (404, '{"code":"receipt_not_found","detail":"No report has this receipt."}')
    }


def test_bad_input_gets_codes_without_echoing_the_url(client: Any, committed: Any) -> None:
    secret = "http://10.0.0.7/very-secret-path"
    cases = {
        secret: "url_not_public",
        "ftp://example.org/very-secret-path": "unsupported_scheme",
        "http://exa mple.org/very-secret-path": "invalid_url",
        "http://example.org/very-secret-path/" + "a" * 5000: "url_too_long",
    }
    for url, code in cases.items():
        response = post(client, url=url)
        assert (response.status_code, response.json()["code"]) == (422, code)
        assert "very-secret-path" not in response.text
    too_long = post(client, url="http://example.org/", description="d" * 2001)
    assert (too_long.status_code, too_long.json()["code"]) == (422, "description_too_long")
    missing = client.post("/api/v1/reports", json={"description": "very-secret-path"})
    assert missing.status_code == 422
    assert missing.json()["code"] == "validation_error"
    assert set(missing.json()["fields"]) == {"url", "category"}
    assert "very-secret-path" not in missing.text
    not_json = client.post(
        "/api/v1/reports", content=b"{", headers={"content-type": "application/json"}
    )
    assert (not_json.status_code, not_json.json()["code"]) == (422, "validation_error")
    assert not_json.json()["fields"] == ["body"]
    with Session(committed) as session:
        assert session.execute(select(func.count()).select_from(Report)).scalar_one() == 0


def test_oversized_body_is_refused_with_413(client: Any) -> None:
    response = client.post(
        "/api/v1/reports",
        content=b'{"url": "http://example.org/", "category": "csam", "description": "'
        + b"x" * 40000
        + b'"}',
        headers={"content-type": "application/json"},
    )
    assert (response.status_code, response.json()["code"]) == (413, "payload_too_large")
    # Refused before any route, it still carries the headers every page has.
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_a_slash_redirect_stays_on_the_scheme_the_browser_used(client: Any) -> None:
    # Behind a TLS proxy the app sees http: an absolute http:// Location would send the
    # report, re-posted by the browser after a 307, off HTTPS.
    response = client.post(
        "/api/v1/reports/",
        json={"url": "http://example.org/", "category": "csam"},
        headers={"host": "hotline.example", "x-forwarded-proto": "https"},
        follow_redirects=False,
    )
    assert response.status_code == 307
    assert response.headers["location"] == "/api/v1/reports"

    def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 1000

    streamed = client.post(
        "/api/v1/reports", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413


def test_contact_is_stored_encrypted_and_never_returned(client: Any, committed: Any) -> None:
    from reporting.contacts import decrypt_contact

    response = post(client, url="http://example.org/", contact="me@example.net")
    assert "me@example.net" not in response.text
    with Session(committed) as session:
        report = session.execute(select(Report)).scalar_one()
    assert report.contact_encrypted is not None
    assert "me@example.net" not in report.contact_encrypted
    assert decrypt_contact(report.contact_encrypted) == "me@example.net"


def test_rate_limit_answers_429_with_retry_after(client: Any, configure: Any) -> None:
    configure(rate_limit="3/minute")
    codes = [post(client, url=f"http://example.org/{i}").status_code for i in range(4)]
    assert codes == [202, 202, 202, 429]
    limited = post(client, url="http://example.org/5")
    assert limited.json()["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60


def test_refused_reports_do_not_count_against_the_limit(client: Any, configure: Any) -> None:
    configure(rate_limit="3/minute")
    mistyped = [post(client, url="example.org:8080/x").status_code for _ in range(5)]
    assert mistyped == [422] * 5  # each says what is wrong, none is counted
    codes = [post(client, url=f"http://example.org/{i}").status_code for i in range(4)]
    assert codes == [202, 202, 202, 429]


def test_a_burst_at_once_is_limited_as_hits_one_by_one(configure: Any) -> None:
    """Without Redis, counters live in the process: threads hitting a new key at the
    same moment (the first views of a page, first reports after a start) still count
    together, so no more get through than the limit."""
    from hotline.settings import get_settings
    from reporting.ratelimit import build_counter

    configure(redis_url="")
    counter = build_counter(get_settings(), "5/minute", "burst")
    start = threading.Barrier(16)

    def hit(_: int) -> int | None:
        start.wait()
        return counter.wait("one account", time.time())

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(hit, range(16)))
    assert answers.count(None) == 5
    # (About a minute: "now" was read before each thread's turn at the counter.)
    assert all(isinstance(wait, int) and 1 <= wait <= 61 for wait in answers if wait is not None)


def test_health_and_readiness(client: Any) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readiness_fails_when_the_broker_is_down(client: Any, configure: Any) -> None:
    configure(broker_url="redis://127.0.0.1:9/0", broker_publish_timeout_seconds="0.5")
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["broker"].startswith("unavailable")


def test_framework_errors_use_the_same_error_shape(client: Any) -> None:
    garbled = client.post(
        "/api/v1/reports", content=b"\xff\xfe{", headers={"content-type": "application/json"}
    )
    assert (garbled.status_code, garbled.json()["code"]) == (400, "invalid_body")
    assert client.get("/api/v1/nothing-here").json()["code"] == "not_found"
    assert client.delete("/api/v1/reports").json()["code"] == "method_not_allowed"


def test_reports_are_accepted_when_the_rate_limit_store_is_down(
    client: Any, configure: Any
) -> None:
    configure(redis_url="redis://127.0.0.1:9/0", rate_limit="5/minute")
    assert post(client, url="http://example.org/while-redis-is-down").status_code == 202
