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

import hashlib
import re
from typing import Any

import pytest
from sqlmodel import col, select

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
from triage.models import Media

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


def new_staff(email: str, role: Role) -> None:
    """A staff account with the initial password, its second factor not yet enrolled."""
    with session_scope() as session:
        create_user(session, email, role, PASSWORD, now=utcnow(), cipher=configured_staff_cipher())


def signed_in(
    chromium: Any, base: str, axe: str, email: str, role: Role, *, javascript: bool = True
) -> Visit:
    """A new staff account, signed in for the first time, in a window tall enough that
    every picture of an item page is in view."""
    new_staff(email, role)
    visit = Visit(chromium, base, axe, locale="en-GB", javascript=javascript)
    visit.page.set_viewport_size({"width": 1280, "height": 3000})
    sign_in_first_time(visit, base, email)
    return visit


def every_view_answered(visit: Visit) -> None:
    """Wait until each safe view of the page is shown or has said why not."""
    visit.page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.safe-view img'))"
        ".every(img => img.getAttribute('data-view') || img.getAttribute('data-failed'))"
    )


def analyst_on_next_item(chromium: Any, base: str, axe: str, target_id: int) -> Visit:
    """A new analyst signs in for the first time and takes the next item, ``target_id``."""
    ana = signed_in(chromium, base, axe, "ana@hotline.example", Role.analyst)
    ana.navigate(lambda: ana.page.keyboard.press("n"))
    assert ana.page.url.endswith(f"/staff/targets/{target_id}")
    return ana


def visit_focus(visit: Visit) -> str:
    return str(visit.page.evaluate("() => document.activeElement.id"))


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
                        view: img.getAttribute('data-view'),
                        content: img.getAttribute('data-content'),
                        status: img.parentNode.querySelector('.view-status').textContent};
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
        new_staff("admin@hotline.example", Role.admin)

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
            ".every(img => img.getAttribute('data-view') && img.complete)"
        )
        shown = blurred_and_grey(ana)
        assert len(shown) == 2
        assert all(s["colour"] <= 2 and s["view"] == "blurred" for s in shown), shown
        assert all(s["content"] == "same" and s["status"] == "" for s in shown), shown
        assert url not in ana.page.content().replace("&amp;", "&").split('id="canonical-url"')[0]
        ana.check_accessibility("item")

        # Keyboard only: first item baseline, next item ignored, unblur the first, save.
        keyboard = ana.page.keyboard
        keyboard.press("1")
        keyboard.press("u")
        ana.page.wait_for_function(
            "() => document.querySelector('.media-card.current .safe-view img')"
            ".getAttribute('data-view') === 'unblurred'"
        )
        assert blurred_and_grey(ana)[0]["colour"] > 2  # the picture itself, in colour
        # A screen reader hears which of the two it is.
        alts = ana.page.eval_on_selector_all(".safe-view img[data-src]", "l => l.map(i => i.alt)")
        assert alts == ["Media 1, unblurred", "Media 2, blurred"]
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
        site.route("/clip.mp4", body=images.fake_mp4(b"another clip"))  # changed since
        ana = analyst_on_next_item(browser, live_server, axe_source, target_id)
        placeholder = ana.page.locator(".safe-view img[data-view='placeholder']")
        placeholder.wait_for()  # a still placeholder first
        assert ana.page.locator(".safe-view video").count() == 0
        status = ana.page.locator(".view-status")
        assert status.inner_text().startswith("This file has changed since it was hashed")
        ana.page.keyboard.press("u")
        video = ana.page.locator(".safe-view video")
        video.wait_for()
        assert video.evaluate("v => v.muted") is True
        assert video.get_attribute("aria-label") == "Media 1, unblurred"
        assert "unblur=true" in (video.get_attribute("src") or "")
        assert ana.page.locator(".safe-view img").is_hidden()  # the player replaces it
        # The player shows the changed file: the page still says so.
        assert status.inner_text().startswith("This file has changed since it was hashed")
        assert ana.outside == []
        ana.close()


def test_the_item_page_says_when_a_file_changed_or_cannot_be_shown(
    browser: Any,  # noqa: F811
    axe_source: str,  # noqa: F811
    live_server: str,
) -> None:
    with LocalHTTPServer() as site:
        files = {
            "/same.png": images.png(31, (320, 240)),
            "/changed.png": images.png(32, (320, 240)),
            "/gone.png": images.png(33, (320, 240)),
            "/down.png": images.png(34, (320, 240)),
        }
        target_id, media_ids = seen(media_page(site, "four.html", files))
        assert len(media_ids) == 4
        # Since they were hashed: one file replaced, one removed, one site erring.
        site.route("/changed.png", body=images.png(35, (200, 100)))
        site.route("/gone.png", status=404, body=b"gone")
        site.route("/down.png", status=503, body=b"busy")
        ana = analyst_on_next_item(browser, live_server, axe_source, target_id)
        every_view_answered(ana)

        with session_scope() as session:
            rows = session.execute(select(col(Media.sha256), col(Media.id))).all()
        ids = {str(sha256): int(media_id) for sha256, media_id in rows}
        media_of = {name: ids[hashlib.sha256(body).hexdigest()] for name, body in files.items()}

        def card(name: str) -> Any:
            return ana.page.locator(f"#media-{media_of[name]}")

        def status(name: str) -> str:
            return str(card(name).locator(".view-status").inner_text()).strip()

        assert status("/same.png") == ""
        assert status("/changed.png").startswith("This file has changed since it was hashed")
        assert card("/changed.png").locator("img").get_attribute("data-content") == "changed"
        assert status("/gone.png") == (
            "The site no longer serves this file. Its hashes stay on record. (http_error_404)"
        )
        assert card("/gone.png").locator("button", has_text="Try again").count() == 0
        assert status("/down.png").startswith("The site did not answer. Try again later.")
        assert "(http_error_503)" in status("/down.png")
        for name in ("/gone.png", "/down.png"):
            assert card(name).locator("img").is_hidden()
        ana.check_accessibility("item with a changed file and two failed views")

        # The site is back: trying again shows the picture and clears the message; the
        # focus stays on the card (the button goes with the message).
        site.route("/down.png", body=files["/down.png"])
        card("/down.png").locator("button", has_text="Try again").click()
        card("/down.png").locator("img[data-view='blurred']").wait_for()
        assert visit_focus(ana) == f"media-{media_of['/down.png']}"
        assert status("/down.png") == ""
        assert card("/down.png").locator("img").is_visible()
        # A view that failed is an answer the page reads, not a broken image.
        failed = sorted(a.split("/")[-2] for a in ana.failed_assets)
        assert failed == sorted(str(media_of[n]) for n in ("/gone.png", "/down.png")), failed
        assert ana.outside == []
        assert ana.console_errors == []
        ana.close()


def test_without_javascript_each_picture_still_shows_once(
    browser: Any,  # noqa: F811
    axe_source: str,  # noqa: F811
    live_server: str,
) -> None:
    with LocalHTTPServer() as site:
        files = {"/p.png": images.png(41, (320, 240)), "/q.jpg": images.jpeg(42, (400, 300))}
        target_id, _ = seen(media_page(site, "two.html", files))
        ana = signed_in(
            browser, live_server, axe_source, "ana@hotline.example", Role.analyst, javascript=False
        )
        ana.page.goto(f"{live_server}/staff/targets/{target_id}")
        visible = ana.page.locator(".safe-view img:visible")
        assert visible.count() == 2  # the noscript pictures, not the script's empty ones
        for n in range(2):
            picture = visible.nth(n)
            picture.scroll_into_view_if_needed()
            ana.page.wait_for_function(
                "img => img.complete && img.naturalWidth > 0", arg=picture.element_handle()
            )
        assert ana.outside == []
        assert ana.failed_assets == []
        ana.close()


def test_views_past_the_limit_and_keys_the_role_lacks_leave_what_is_shown(
    browser: Any,  # noqa: F811
    axe_source: str,  # noqa: F811
    live_server: str,
    configure: Any,
) -> None:
    configure(safe_view_rate_limit="2/minute")
    with LocalHTTPServer() as site:
        files = {f"/{n}.png": images.png(50 + n, (320, 240)) for n in range(3)}
        target_id, _ = seen(media_page(site, "three.html", files))
        admin = signed_in(browser, live_server, axe_source, "admin@hotline.example", Role.admin)
        admin.page.goto(f"{live_server}/staff/targets/{target_id}")
        every_view_answered(admin)
        # Two views a minute: the third picture says why it is missing, and can be
        # asked for again.
        shown = admin.page.locator(".safe-view img[data-view='blurred']")
        assert shown.count() == 2
        limited = admin.page.locator(".safe-view img[data-failed='429'] + noscript + p")
        assert limited.inner_text().startswith(
            "Too many views from your account just now. Try again in a minute."
        )
        assert limited.locator("button", has_text="Try again").count() == 1

        # An admin may look but not unblur: "u" leaves the blurred pictures as they are.
        assert admin.page.locator("[data-unblur]").count() == 0
        admin.page.keyboard.press("u")
        admin.page.wait_for_timeout(500)  # what a request would have changed by now
        assert shown.count() == 2
        assert admin.page.locator(".safe-view img[data-state='unblurred']").count() == 0
        assert admin.outside == []
        admin.close()
