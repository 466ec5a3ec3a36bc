"""The public pages in real headless Chromium: keyboard use, axe-core, both languages.

Chromium is Debian's (``/usr/bin/chromium``) driven by Playwright; axe-core comes from
npm (``npm install --prefix .ci/axe axe-core@4``) and is injected by the test, never
served by the app. Every request the page makes to anywhere but the test server is
aborted and fails the test. Without Chromium or axe-core the tests skip, on CI they fail.
"""

# Ukrainian text in assertions is meant: Cyrillic letters are not typos for Latin ones.
# ruff: noqa: RUF001

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import Session

from reporting.models import Report

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
ON_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = Path("/usr/bin/chromium")
AXE = Path(
    os.environ.get(
        "HOTLINE_AXE_PATH", REPO / ".ci" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
    )
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BLOCKING_IMPACTS = {"serious", "critical"}


def _unavailable(reason: str) -> None:
    if ON_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@dataclass
class Texts:
    """What the reporter sees in one language."""

    lang: str
    heading: str
    error_summary: str
    url_label: str
    category_label: str
    send: str
    thanks: str
    to_status: str
    check: str
    status: str
    privacy: str


ENGLISH = Texts(
    lang="en",
    heading="Report child sexual abuse material online",
    error_summary="There is a problem",
    url_label="Web address (URL) of the material",
    category_label="Grooming or enticement of a child",
    send="Send report",
    thanks="Thank you. Your report has been received.",
    to_status="Check the status of your report",
    check="Check status",
    status="Status: Received",
    privacy="Privacy notice",
)
UKRAINIAN = Texts(
    lang="uk",
    heading="Повідомте про матеріали сексуального насильства над дітьми в інтернеті",
    error_summary="Виникла проблема",
    url_label="Вебадреса (URL) матеріалів",
    category_label="Грумінг або домагання дитини",
    send="Надіслати повідомлення",
    thanks="Дякуємо. Ваше повідомлення отримано.",
    to_status="Перевірити стан вашого повідомлення",
    check="Перевірити стан",
    status="Стан: Отримано",
    privacy="Політика конфіденційності",
)


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.is_file():
        _unavailable(f"axe-core not found at {AXE} (npm install --prefix .ci/axe axe-core@4)")
    return AXE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        _unavailable(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Visit:
    """One browser context on the live server, recording what must not happen."""

    def __init__(
        self, browser: Any, base: str, axe_source: str, locale: str, javascript: bool = True
    ) -> None:
        self.base = base
        self.outside: list[str] = []
        self.console_errors: list[str] = []
        self.context = browser.new_context(locale=locale, java_script_enabled=javascript)
        # An init script is not subject to the page's CSP, unlike an injected <script>.
        self.context.add_init_script(axe_source)
        self.context.route("**/*", self._only_the_live_server)
        self.page = self.context.new_page()
        self.page.set_default_timeout(10_000)
        self.failed_assets: list[str] = []
        self.page.on("console", self._console)
        self.page.on("response", self._response)

    def _console(self, message: Any) -> None:
        # A 422 or 404 page is an answer, not a failure; failed assets are caught below.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.console_errors.append(message.text)

    def _response(self, response: Any) -> None:
        if response.request.resource_type != "document" and response.status >= 400:
            self.failed_assets.append(f"{response.status} {response.url}")

    def _only_the_live_server(self, route: Any) -> None:
        url = route.request.url
        if url == self.base or url.startswith(self.base + "/"):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def focused(self) -> dict[str, str]:
        return dict(
            self.page.evaluate(
                "() => ({id: document.activeElement.id, cls: document.activeElement.className,"
                " tag: document.activeElement.tagName})"
            )
        )

    def check_accessibility(self, what: str) -> None:
        results = self.page.evaluate("async () => await axe.run()")
        violations = results["violations"]
        for violation in violations:
            targets = [node["target"] for node in violation["nodes"]]
            impact, rule, help_text = violation["impact"], violation["id"], violation["help"]
            print(f"axe [{what}] {impact}: {rule}: {help_text} {targets}")
        blocking = [v["id"] for v in violations if v["impact"] in BLOCKING_IMPACTS]
        assert not blocking, f"axe found serious or critical violations on {what}: {blocking}"
        assert results["passes"], "axe did not run any check"

    def navigate(self, action: Callable[[], Any]) -> None:
        """Do what leads to another page and wait until that page has loaded."""
        with self.page.expect_navigation():
            action()

    def close(self) -> None:
        self.context.close()


@pytest.mark.parametrize("texts", [ENGLISH, UKRAINIAN], ids=["en", "uk"])
def test_report_and_check_status_with_the_keyboard(
    browser: Any, axe_source: str, live_server: str, committed: Any, texts: Texts
) -> None:
    # English comes from the browser's language; Ukrainian is chosen with the switcher.
    visit = Visit(browser, live_server, axe_source, locale="en-GB")
    page = visit.page
    try:
        page.goto(live_server + "/")
        assert page.get_attribute("html", "lang") == "en"
        if texts.lang != "en":
            visit.navigate(lambda: page.get_by_role("link", name="Українська").click())
        assert page.get_attribute("html", "lang") == texts.lang
        assert page.get_by_role("heading", level=1).inner_text() == texts.heading
        assert page.locator("a.quick-exit").is_visible()
        assert page.locator("#quick-exit-hint").is_visible()  # shown by the optional script
        visit.check_accessibility(f"{texts.lang} form")

        # Skip link first, then straight into the form.
        page.keyboard.press("Tab")
        assert visit.focused()["cls"] == "skip-link"
        page.keyboard.press("Enter")
        page.keyboard.press("Tab")
        assert visit.focused()["id"] == "url"

        # Sending the empty form: the error summary takes the focus and links to the fields.
        visit.navigate(lambda: page.get_by_role("button", name=texts.send).press("Enter"))
        # autofocus, no script: applied at the next rendering update after load.
        page.wait_for_function("document.activeElement.classList.contains('error-summary')")
        assert texts.error_summary in page.locator(".error-summary").inner_text()
        assert page.get_by_label(texts.url_label).get_attribute("aria-invalid") == "true"
        visit.check_accessibility(f"{texts.lang} form with errors")
        page.locator(".error-summary a").first.press("Enter")
        assert visit.focused()["id"] == "url"

        page.keyboard.type("https://example.com/gallery/7")
        page.keyboard.press("Tab")
        assert visit.focused()["id"] == "category-csam"
        page.keyboard.press("ArrowDown")
        assert page.get_by_label(texts.category_label).is_checked()
        page.keyboard.press("Tab")
        assert visit.focused()["id"] == "description"
        page.keyboard.type("Second row of thumbnails.")
        page.keyboard.press("Tab")
        assert visit.focused()["id"] == "contact"
        page.keyboard.press("Tab")
        assert visit.focused()["tag"] == "BUTTON"
        visit.navigate(lambda: page.keyboard.press("Enter"))

        assert page.get_by_role("heading", level=1).inner_text() == texts.thanks
        receipt = page.locator("#receipt").inner_text().strip()
        assert len(receipt) >= 22
        assert receipt not in page.url
        visit.check_accessibility(f"{texts.lang} receipt")

        visit.navigate(lambda: page.get_by_role("link", name=texts.to_status).click())
        assert page.get_attribute("html", "lang") == texts.lang
        visit.check_accessibility(f"{texts.lang} status form")
        page.locator("#receipt").focus()
        page.keyboard.type(receipt)
        visit.navigate(lambda: page.keyboard.press("Enter"))
        assert texts.status in page.locator("#status-title").inner_text()
        assert receipt not in page.url
        visit.check_accessibility(f"{texts.lang} status")

        visit.navigate(lambda: page.get_by_role("link", name=texts.privacy).click())
        assert page.get_by_role("heading", level=1).inner_text() == texts.privacy
        visit.check_accessibility(f"{texts.lang} privacy notice")

        assert visit.outside == [], "the page tried to reach something other than the test server"
        assert visit.console_errors == [], "console errors (CSP violations?)"
        assert visit.failed_assets == [], "stylesheet or script missing"
    finally:
        visit.close()

    with Session(committed) as session:
        report = session.execute(select(Report)).scalar_one()
    assert (report.source, report.category, report.language) == ("public", "grooming", texts.lang)


def test_everything_works_without_javascript(
    browser: Any, axe_source: str, live_server: str, committed: Any
) -> None:
    visit = Visit(browser, live_server, axe_source, locale="uk-UA", javascript=False)
    page = visit.page
    try:
        page.goto(live_server + "/")
        assert page.get_attribute("html", "lang") == "uk"
        assert page.locator("a.quick-exit").is_visible()
        assert page.get_attribute("a.quick-exit", "rel") == "noreferrer"
        assert not page.locator("#quick-exit-hint").is_visible()  # the Esc key needs the script
        page.get_by_label(UKRAINIAN.url_label).fill("https://example.com/no-script")
        page.get_by_label(UKRAINIAN.category_label).check()
        visit.navigate(lambda: page.get_by_role("button", name=UKRAINIAN.send).click())
        receipt = page.locator("#receipt").inner_text().strip()
        visit.navigate(lambda: page.get_by_role("link", name=UKRAINIAN.to_status).click())
        page.locator("#receipt").fill(receipt)
        visit.navigate(lambda: page.get_by_role("button", name=UKRAINIAN.check).click())
        assert UKRAINIAN.status in page.locator("#status-title").inner_text()
        assert visit.outside == []
    finally:
        visit.close()


def test_escape_twice_leaves_for_the_quick_exit_address(
    browser: Any, axe_source: str, live_server: str, configure: Any
) -> None:
    configure(quick_exit_url="https://quick-exit.invalid/")
    visit = Visit(browser, live_server, axe_source, locale="en-GB")
    page = visit.page
    try:
        page.goto(live_server + "/")
        page.keyboard.press("Escape")
        page.wait_for_timeout(1100)
        page.keyboard.press("Escape")  # too late to count as the second press
        page.wait_for_timeout(200)
        assert visit.outside == []
        # The test aborts the request, so nothing is sent; it is the only one not to the server.
        with page.expect_event("requestfailed") as failed:
            page.keyboard.press("Escape")
        assert failed.value.url == "https://quick-exit.invalid/"
        assert visit.outside == ["https://quick-exit.invalid/"]
    finally:
        visit.close()
