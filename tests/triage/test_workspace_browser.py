"""The analyst workspace in real headless Chromium, from an admin creating an analyst to
the reporter's status page changing.

An admin signs in (enrolling the second factor from the QR page), creates two analysts;
the first enrols, takes the next item, sees its media blurred through the safe view,
assesses it with the keyboard alone, and the item leaves the queue; under the "always"
policy the second analyst confirms; the reporter's status page then says action was
taken. Every request the browser makes to anywhere but the hotline is aborted and fails
the test, so no staff page touches the reported site (served on another port).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from hotline.auth import configured_staff_cipher, create_user, totp_code, totp_step
from hotline.db import session_scope, utcnow
from hotline.models import Role
from tests.fixtures import images
from tests.fixtures.servers import LocalHTTPServer
from tests.reporting.test_pages_browser import (  # noqa: F401 - fixtures
    Visit,
    axe_source,
    browser,
)
from tests.triage.test_safeview import page as media_page
from tests.triage.test_safeview import seen

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"


def current_code(secret: str) -> str:
    return totp_code(secret, totp_step(utcnow()))


def sign_in_first_time(visit: Visit, base: str, email: str) -> None:
    """Sign in with the initial password, scan (read) the key, confirm the first code."""
    page = visit.page
    page.goto(base + "/staff/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    visit.navigate(lambda: page.press("#password", "Enter"))
    assert page.url.endswith("/staff/enrol")
    assert page.get_attribute("img.qr", "src", timeout=5000).startswith("data:image/svg+xml")
    secret = page.inner_text("#totp-secret").strip()
    page.fill("#totp", current_code(secret))
    visit.navigate(lambda: page.press("#totp", "Enter"))


def blurred_and_grey(visit: Visit) -> list[dict[str, Any]]:
    """What the item page's safe-view images are: loaded, and their pixels' colour."""
    return list(
        visit.page.evaluate(
            """() => Array.from(document.querySelectorAll('.safe-view img')).map(img => {
                const canvas = document.createElement('canvas');
                canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
                const ctx = canvas.getContext('2d');
                ctx.drawImage(img, 0, 0);
                const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
                let colour = 0;
                for (let i = 0; i < data.length; i += 4) {
                    colour = Math.max(colour, Math.abs(data[i] - data[i + 1]),
                                      Math.abs(data[i + 1] - data[i + 2]));
                }
                return {width: img.naturalWidth, complete: img.complete, colour: colour,
                        src: img.getAttribute('src')};
            })"""
        )
    )


def test_from_new_analyst_to_confirmed_report(
    browser: Any,  # noqa: F811
    axe_source: str,  # noqa: F811
    live_server: str,
    configure: Any,
) -> None:
    configure(second_opinion="always")
    with LocalHTTPServer() as site:
        url = media_page(
            site,
            "gallery.html",
            {
                "/a.png": images.png(1, (320, 240)),
                "/b.jpg": images.jpeg(2, (400, 300)),
            },
        )
        # The reporter files the report on the public form's API and keeps the receipt.
        import httpx

        receipt = httpx.post(
            live_server + "/api/v1/reports", json={"url": url, "category": "csam"}
        ).json()["receipt"]
        target_id, media_ids = seen(url)
        assert len(media_ids) == 2
        with session_scope() as session:
            create_user(
                session,
                "admin@hotline.example",
                Role.admin,
                PASSWORD,
                now=utcnow(),
                cipher=configured_staff_cipher(),
            )

        def status_text(visit: Visit) -> str:
            page = visit.page
            page.goto(live_server + "/status")
            page.fill("#receipt", receipt)
            visit.navigate(lambda: page.press("#receipt", "Enter"))
            return page.inner_text("main")

        reporter = Visit(browser, live_server, axe_source, locale="en-GB")
        assert "Being assessed" in status_text(reporter)

        # The admin creates two analysts.
        admin = Visit(browser, live_server, axe_source, locale="en-GB")
        sign_in_first_time(admin, live_server, "admin@hotline.example")
        assert admin.page.url.endswith("/staff/users")
        for email in ("ana@hotline.example", "olek@hotline.example"):
            admin.page.fill("#new-email", email)
            admin.page.select_option("#new-role", "analyst")
            admin.page.fill("#new-password", PASSWORD)
            admin.navigate(lambda: admin.page.press("#new-password", "Enter"))
            assert email in admin.page.inner_text("#user-created")
        admin.check_accessibility("staff accounts")

        # The first analyst enrols, takes the next item and sees its media blurred.
        ana = Visit(browser, live_server, axe_source, locale="en-GB")
        # Tall enough that the lazily loaded safe-view images are all in view.
        ana.page.set_viewport_size({"width": 1280, "height": 3000})
        sign_in_first_time(ana, live_server, "ana@hotline.example")
        assert ana.page.url.endswith("/staff/queue")
        assert ana.page.locator("#queue-items").inner_text().count(str(target_id)) >= 1
        ana.check_accessibility("queue")
        ana.navigate(lambda: ana.page.keyboard.press("n"))
        assert ana.page.url.endswith(f"/staff/targets/{target_id}")
        ana.page.wait_for_function(
            "() => Array.from(document.querySelectorAll('.safe-view img'))"
            ".every(img => img.complete && img.naturalWidth > 0)"
        )
        shown = blurred_and_grey(ana)
        assert len(shown) == 2
        assert all(s["colour"] <= 2 and "unblur" not in s["src"] for s in shown), shown
        assert url not in ana.page.content().replace("&amp;", "&").split('id="canonical-url"')[0]
        ana.check_accessibility("item")

        # Keyboard only: first item baseline, next item ignored, unblur the first, save.
        keyboard = ana.page.keyboard
        keyboard.press("1")
        keyboard.press("u")
        ana.page.wait_for_function(
            "() => document.querySelector('.media-card.current .safe-view img')"
            ".getAttribute('src').includes('unblur=true')"
        )
        keyboard.press("j")
        keyboard.press("5")
        ana.navigate(lambda: keyboard.press("s"))
        assert ana.page.url.endswith(f"/staff/queue?done={target_id}")
        assert "waiting for a second opinion" in ana.page.inner_text("#decided")
        assert ana.page.locator("#queue-empty").is_visible()
        assert "Being assessed" in status_text(reporter)

        # The second analyst confirms.
        olek = Visit(browser, live_server, axe_source, locale="en-GB")
        sign_in_first_time(olek, live_server, "olek@hotline.example")
        olek.page.goto(live_server + "/staff/second-opinions")
        olek.navigate(lambda: olek.page.locator("#waiting a", has_text=str(target_id)).click())
        olek.check_accessibility("second opinion")
        olek.navigate(lambda: olek.page.click("#second-agree"))
        assert "confirmed" in olek.page.inner_text("#decided")

        assert re.search(r"action", status_text(reporter), re.I)
        for visit in (reporter, admin, ana, olek):
            assert visit.outside == [], visit.outside
            assert visit.failed_assets == [], visit.failed_assets
            assert visit.console_errors == [], visit.console_errors
            visit.close()


def test_a_video_plays_muted_only_when_unblurred(
    browser: Any,  # noqa: F811
    axe_source: str,  # noqa: F811
    live_server: str,
) -> None:
    with LocalHTTPServer() as site:
        target_id, _ = seen(site.route("/clip.mp4", body=images.fake_mp4()))
        with session_scope() as session:
            create_user(
                session,
                "ana@hotline.example",
                Role.analyst,
                PASSWORD,
                now=utcnow(),
                cipher=configured_staff_cipher(),
            )
        ana = Visit(browser, live_server, axe_source, locale="en-GB")
        sign_in_first_time(ana, live_server, "ana@hotline.example")
        ana.navigate(lambda: ana.page.keyboard.press("n"))
        assert ana.page.url.endswith(f"/staff/targets/{target_id}")
        assert ana.page.locator(".safe-view video").count() == 0  # a still placeholder first
        ana.page.keyboard.press("u")
        video = ana.page.locator(".safe-view video")
        video.wait_for()
        assert video.evaluate("v => v.muted") is True
        assert "unblur=true" in (video.get_attribute("src") or "")
        assert ana.outside == []
        ana.close()
