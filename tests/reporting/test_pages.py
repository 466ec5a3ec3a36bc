"""The public pages through the ASGI app: languages, the form, the receipt, the status page."""

# Ukrainian text in assertions is meant: Cyrillic letters are not typos for Latin ones.
# ruff: noqa: RUF001

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po
from sqlalchemy import func, select
from sqlmodel import Session

from hotline import i18n
from hotline.errors import HotlineError
from reporting import errors as reporting_errors
from reporting import pages
from reporting.models import Report, Target
from reporting.schemas import PublicStatus

REPO = Path(__file__).resolve().parents[2]
LOCALE = REPO / "hotline" / "locale"
RECEIPT = re.compile(r'<code id="receipt"[^>]*>([^<]+)</code>')
PUBLIC_PAGES = ("/", "/status", "/privacy")


def submit(client: Any, **fields: str) -> Any:
    return client.post("/", data={"category": "csam", "lang": "en", **fields})


def receipt_of(response: Any) -> str:
    match = RECEIPT.search(response.text)
    assert match, "no receipt on the page"
    return match.group(1)


def count(engine: Any, model: Any) -> int:
    with Session(engine) as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


# Language


def test_form_is_english_by_default(client: Any) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<html lang="en" dir="ltr">' in response.text
    assert "Report child sexual abuse material online" in response.text
    assert response.headers["content-language"] == "en"


@pytest.mark.parametrize(
    "header",
    ["uk", "uk-UA,uk;q=0.9,en;q=0.8", "de-DE, de;q=0.9, uk;q=0.5", "en;q=0.1, uk-UA;q=0.7"],
)
def test_form_follows_accept_language(client: Any, header: str) -> None:
    response = client.get("/", headers={"Accept-Language": header})
    assert '<html lang="uk" dir="ltr">' in response.text
    assert "Повідомте про матеріали сексуального насильства над дітьми в інтернеті" in response.text
    assert response.headers["content-language"] == "uk"


@pytest.mark.parametrize(
    "header", ["de", "fr-FR, de;q=0.5", "uk;q=0, en;q=0.1", "*", "", "x" * 2000]
)
def test_unknown_or_refused_languages_give_the_default(client: Any, header: str) -> None:
    assert '<html lang="en"' in client.get("/", headers={"Accept-Language": header}).text


def test_default_language_comes_from_settings(client: Any, configure: Any) -> None:
    configure(default_language="uk")
    assert '<html lang="uk"' in client.get("/", headers={"Accept-Language": "de"}).text


def test_lang_parameter_wins_over_the_browser(client: Any) -> None:
    assert '<html lang="uk"' in client.get("/?lang=uk", headers={"Accept-Language": "en"}).text
    assert '<html lang="en"' in client.get("/?lang=en", headers={"Accept-Language": "uk"}).text
    assert '<html lang="uk"' in client.get("/?lang=UK").text
    assert '<html lang="uk"' in client.get("/?lang=xx", headers={"Accept-Language": "uk"}).text


def test_switcher_names_each_language_in_itself(client: Any) -> None:
    html = client.get("/status?lang=uk").text
    nav = html[html.index('<nav class="languages"') : html.index("</nav>")]
    assert 'aria-label="Мова"' in nav
    assert '<a href="/status?lang=en" lang="en" hreflang="en">English</a>' in nav
    assert (
        'href="/status?lang=uk" lang="uk" hreflang="uk" aria-current="page">Українська</a>' in nav
    )


def test_negotiation_rules() -> None:
    assert i18n.accepted_languages("da, en-GB;q=0.8, en;q=0.7") == ["da", "en-GB", "en"]
    assert i18n.accepted_languages("en;q=0.5, uk") == ["uk", "en"]
    assert i18n.accepted_languages("uk;q=0, en;q=bogus") == []
    assert i18n.negotiate(None, "uk-UA", "en") == "uk"
    assert i18n.negotiate("uk_UA", None, "en") == "uk"
    assert i18n.negotiate(None, None, "uk") == "uk"
    assert i18n.negotiate(None, None, "zz") == "en"
    assert i18n.negotiate("zz", "de", "en") == "en"


def test_a_catalogue_directory_is_a_language(tmp_path: Path) -> None:
    target = tmp_path / "pt_BR" / "LC_MESSAGES"
    target.mkdir(parents=True)
    shutil.copy(LOCALE / "uk" / "LC_MESSAGES" / "messages.po", target / "messages.po")
    found = i18n.catalogue_paths(tmp_path)
    assert list(found) == ["pt-BR"]
    assert i18n.compile_catalogue(found["pt-BR"]).gettext("Send report") == "Надіслати повідомлення"
    assert [lang.code for lang in i18n.available_languages()][:1] == ["en"]
    assert "uk" in {lang.code for lang in i18n.available_languages()}


# Privacy of the reporter


def test_no_page_sets_a_cookie_or_can_be_cached(client: Any) -> None:
    responses = [client.get(path, headers={"Accept-Language": "uk"}) for path in PUBLIC_PAGES]
    responses += [
        client.get("/static/hotline.css"),
        client.get("/static/quick-exit.js"),
        submit(client, url="https://example.com/cookies"),
        submit(client, url=""),
        client.post("/status", data={"receipt": "nothing"}),
    ]
    for response in responses:
        assert "set-cookie" not in response.headers, response.url
        assert response.status_code in (200, 404, 422), response.url
    for response in responses[:3] + responses[5:]:
        assert response.headers["cache-control"] == "no-store"
    assert not client.cookies


@pytest.mark.parametrize("path", PUBLIC_PAGES)
def test_pages_have_no_inline_code_and_no_third_party_assets(client: Any, path: str) -> None:
    html = client.get(path).text
    assert "style=" not in html
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/quick-exit.js" defer>']
    assert "<style" not in html
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith(("/", "#", "data:")) or url == "https://www.google.com/", url


@pytest.mark.parametrize("path", PUBLIC_PAGES)
def test_public_pages_allow_no_pictures_made_by_scripts(client: Any, path: str) -> None:
    # Only the staff item page's script shows pictures from blob: addresses.
    policy = client.get(path).headers["content-security-policy"]
    assert "img-src 'self' data:;" in policy
    assert "blob:" not in policy


def test_quick_exit_is_at_the_top_and_sends_no_referrer(client: Any, configure: Any) -> None:
    configure(quick_exit_url="https://weather.example/")
    html = client.get("/").text
    link = (
        '<a class="quick-exit" href="https://weather.example/" rel="noreferrer">'
        "Leave this site quickly</a>"
    )
    assert link in html
    assert html.index(link) < html.index("<main")


def test_privacy_notice_says_what_is_kept(client: Any, configure: Any) -> None:
    configure(contact_retention_days=30)
    english = client.get("/privacy").text
    for phrase in (
        "Your IP address.",
        "user agent",
        "this site sets none",
        "erased after 30 days",
        "We never store the images or videos",
        "keyed hash",
    ):
        assert phrase in english
    ukrainian = client.get("/privacy?lang=uk").text
    assert "Їх видаляють через 30 днів." in ukrainian
    configure(contact_retention_days=21)
    assert "Їх видаляють через 21 день." in client.get("/privacy?lang=uk").text
    assert "It is deleted after 21 days." in client.get("/").text


# The form


def test_form_has_labels_fieldset_and_hints(client: Any) -> None:
    html = client.get("/").text
    for field in ("url", "description", "contact"):
        assert f'<label class="label" for="{field}">' in html
        assert f'id="{field}" name="{field}"' in html
    assert '<legend class="label">What did you see?</legend>' in html
    for category in ("csam", "grooming", "trafficking", "other"):
        assert f'<label for="category-{category}">' in html
        assert f'aria-describedby="category-{category}-hint"' in html
    assert 'maxlength="2000"' in html
    # Browsers' "enhanced" spell checking would send what is typed to a third party.
    assert html.count('spellcheck="false"') == 3
    assert 'autocomplete="off"' in html
    assert "Do not download, screenshot, copy or share the material." in html
    assert "you do not need to give your name" in html
    assert "deleted after 90 days" in html
    assert '<a class="skip-link" href="#main">' in html
    assert '<input type="hidden" name="lang" value="en">' in html


def test_submitting_the_form_stores_a_public_report_and_shows_the_receipt(
    client: Any, committed: Any
) -> None:
    response = client.post(
        "/",
        data={
            "url": "https://Example.com/a/../gallery?id=7#top",
            "category": "grooming",
            "description": "second post\r\non the page",
            "contact": " someone@example.org ",
            "lang": "uk",
        },
        follow_redirects=False,
    )
    assert response.status_code == 200
    assert "location" not in response.headers
    assert response.headers["cache-control"] == "no-store"
    receipt = receipt_of(response)
    assert len(receipt) >= 22
    assert "Дякуємо. Ваше повідомлення отримано." in response.text
    assert "Запишіть цей код зараз" in response.text
    assert '<nav class="languages"' not in response.text  # following it would lose the receipt
    assert '<a class="button button-secondary" href="/status?lang=uk">' in response.text
    for url in re.findall(r'(?:href|action|src)="([^"]*)"', response.text):
        assert receipt not in url
    with Session(committed) as session:
        report = session.execute(select(Report)).scalar_one()
        target = session.execute(select(Target)).scalar_one()
    assert report.source == "public"
    assert report.category == "grooming"
    assert report.language == "uk"
    assert report.description == "second post\non the page"
    assert report.contact_encrypted
    assert "someone" not in report.contact_encrypted
    assert target.canonical_url == "https://example.com/gallery?id=7"

    status = client.post("/status", data={"receipt": receipt, "lang": "uk"})
    assert status.status_code == 200
    assert "Стан: Отримано" in status.text
    assert receipt not in status.text
    english = client.post("/status", data={"receipt": f"  {receipt} "})
    assert "Status: Received" in english.text
    assert client.get(f"/api/v1/reports/{receipt}").json() == {"status": "received"}
    # A receipt mistyped stays in the field, to be checked against what was noted.
    mistyped = client.post("/status", data={"receipt": receipt[:-1] + "<"})
    assert mistyped.status_code == 404
    assert f'value="{receipt[:-1]}&lt;"' in mistyped.text


def test_an_invalid_url_is_refused_in_the_readers_language(client: Any, committed: Any) -> None:
    response = client.post(
        "/",
        data={
            "url": "not a web address",
            "category": "trafficking",
            "description": "kept",
            "lang": "uk",
        },
    )
    assert response.status_code == 422
    html = response.text
    message = "Ми не можемо розпізнати цю вебадресу. Скопіюйте її з адресного рядка браузера."
    assert '<p class="error-message" id="url-error">' in html
    assert html.count(message) == 2  # summary and field
    assert 'aria-describedby="url-hint url-error" aria-invalid="true"' in html
    assert '<div class="error-summary" role="alert"' in html
    assert '<a href="#url">' in html
    assert "<title>Помилка:" in html
    assert 'value="not a web address"' in html
    assert (
        'value="trafficking" required aria-describedby="category-trafficking-hint" checked' in html
    )
    assert ">kept</textarea>" in html
    assert count(committed, Report) == 0
    assert count(committed, Target) == 0


def test_what_the_reporter_typed_is_escaped(client: Any) -> None:
    response = submit(client, url='"><script>alert(1)</script>', description="</textarea><b>x")
    assert response.status_code == 422
    assert "<script>alert" not in response.text
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in response.text
    assert "&lt;/textarea&gt;&lt;b&gt;x</textarea>" in response.text


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "ftp://example.com/file",
            "Only addresses that start with http:// or https:// can be reported.",
        ),
        ("http://10.1.2.3/admin", "This address points to a private or local network"),
        ("https://example.com/" + "a" * 5000, "This web address is too long for us to accept."),
    ],
)
def test_every_url_error_has_its_own_message(client: Any, url: str, message: str) -> None:
    response = submit(client, url=url)
    assert response.status_code == 422
    assert message in response.text
    assert 'id="url-error"' in response.text


def test_missing_answers_are_all_shown_at_once(client: Any, committed: Any) -> None:
    response = client.post("/", data={"description": "only this"})
    assert response.status_code == 422
    assert "Enter the web address where you saw the material." in response.text
    assert "Choose what you saw." in response.text
    assert '<a href="#category-csam">' in response.text
    assert '<fieldset class="fieldset" aria-describedby="category-error">' in response.text
    assert ">only this</textarea>" in response.text
    assert count(committed, Report) == 0


def test_bad_category_and_long_fields_are_refused(client: Any, committed: Any) -> None:
    response = submit(client, url="https://example.com/", category="cats", contact="c" * 501)
    assert response.status_code == 422
    assert "Choose what you saw." in response.text
    assert "Contact details can be at most 500 characters of plain text." in response.text
    response = submit(client, url="https://example.com/", description="d" * 2001)
    assert response.status_code == 422
    assert "The description can be at most 2,000 characters long." in response.text
    assert count(committed, Report) == 0


def test_a_full_ukrainian_description_fits_in_the_body_limit(client: Any, committed: Any) -> None:
    # Textareas count a line break as one character but send CRLF.
    description = ("опис\r\n" * 400)[:-2]
    assert len(description.replace("\r\n", "\n")) <= 2000
    response = submit(
        client, url="https://example.com/" + "x" * 200, description=description, lang="uk"
    )
    assert response.status_code == 200, response.text[:200]
    assert count(committed, Report) == 1


@pytest.mark.parametrize(
    ("fetch_site", "accepted"),
    [
        ("cross-site", False),
        ("same-origin", True),
        ("same-site", True),
        ("none", True),
        (None, True),
    ],
)
def test_a_report_posted_by_another_website_is_refused(
    client: Any, committed: Any, fetch_site: str | None, accepted: bool
) -> None:
    # A page elsewhere auto-submitting the form from its visitors' browsers.
    headers = {} if fetch_site is None else {"Sec-Fetch-Site": fetch_site}
    response = client.post(
        "/",
        data={"url": "https://planted-site.org/x", "category": "csam", "lang": "uk"},
        headers=headers,
    )
    with Session(committed) as session:
        stored = session.execute(select(func.count()).select_from(Report)).scalar_one()
    if accepted:
        assert (response.status_code, stored) == (200, 1)
        return
    assert (response.status_code, stored) == (403, 0)
    assert "Цю форму надіслано з іншого вебсайту" in response.text
    assert "planted-site" not in response.text  # what it sent is not shown back


def test_rate_limited_reporters_see_the_form_again(
    client: Any, configure: Any, committed: Any
) -> None:
    configure(rate_limit="1/minute")
    assert submit(client, url="https://example.com/one").status_code == 200
    response = submit(client, url="https://example.com/two", description="still here", lang="uk")
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert "З цього підключення за короткий час надіслано багато повідомлень." in response.text
    assert ">still here</textarea>" in response.text
    assert count(committed, Report) == 1


# The status page


def test_status_page_asks_for_the_receipt(client: Any) -> None:
    html = client.get("/status?lang=uk").text
    assert '<form class="status-form" method="post" action="/status"' in html
    assert '<label class="label" for="receipt">Код повідомлення</label>' in html
    for status in ("Отримано", "Розглядається", "Вжито заходів", "Вжити заходів неможливо"):
        assert f"<dt>{status}</dt>" in html


def test_unknown_and_malformed_receipts_get_the_same_answer(client: Any) -> None:
    answers = [
        client.post("/status", data={"receipt": receipt})
        for receipt in ("A" * 27, "not-a-receipt!", "ж" * 30, "x" * 500, "\x00")
    ]
    assert {answer.status_code for answer in answers} == {404}
    # The same page, but for the receipt kept in the field as typed.
    assert len({re.sub(r' value="[^"]*"', "", answer.text) for answer in answers}) == 1
    assert "There is no report with this receipt." in answers[0].text
    empty = client.post("/status", data={"receipt": "   ", "lang": "uk"})
    assert empty.status_code == 422
    assert "Введіть код, який ви побачили після надсилання повідомлення." in empty.text


# Catalogues


def test_every_code_has_a_message_and_every_status_a_label() -> None:
    module = pages.templates.environment("en").get_template("_messages.html").module
    codes = {
        cls.code
        for cls in vars(reporting_errors).values()
        if isinstance(cls, type) and issubclass(cls, HotlineError) and cls is not HotlineError
    }
    codes |= set(pages.ERROR_FIELDS) | {"url_missing", "category_missing", "receipt_missing"}
    codes |= {f"{field}_invalid" for field in pages.FIELDS} | {"validation_error"}
    assert codes <= set(module.ERRORS)  # type: ignore[attr-defined]
    assert {s.value for s in PublicStatus} == set(module.STATUSES)  # type: ignore[attr-defined]


def _ids(path: Path) -> set[Any]:
    with path.open("rb") as file:
        return {message.id for message in read_po(file) if message.id}


def test_the_template_is_up_to_date_with_the_code(tmp_path: Path) -> None:
    extracted = tmp_path / "messages.pot"
    # The very command docs/translations.md gives, into a temporary file.
    command = ["pybabel", "-q", "extract", "-F", str(LOCALE / "babel.cfg"), "-o", str(extracted)]
    CommandLineInterface().run([*command, str(REPO)])  # type: ignore[no-untyped-call]
    assert _ids(extracted) == _ids(LOCALE / "messages.pot"), (
        "hotline/locale/messages.pot is stale: run the extract command in docs/translations.md"
    )


@pytest.mark.parametrize("code", sorted(i18n.catalogue_paths()))
def test_every_catalogue_is_complete(code: str) -> None:
    path = i18n.catalogue_paths()[code]
    with path.open("rb") as file:
        catalogue = read_po(file)
    assert {m.id for m in catalogue if m.id} == _ids(LOCALE / "messages.pot"), f"{code}: run update"
    assert not catalogue.obsolete, f"{code}: obsolete entries"
    for message in catalogue:
        if not message.id:
            continue
        assert not message.fuzzy, f"{code}: fuzzy {message.id!r}"
        string_or_forms = message.string or ""
        strings = [string_or_forms] if isinstance(string_or_forms, str) else list(string_or_forms)
        assert len(strings) == (catalogue.num_plurals if message.pluralizable else 1)
        ids = [str(i) for i in message.id] if message.pluralizable else [str(message.id)]
        wanted = set(re.findall(r"%\(\w+\)s", ids[-1]))
        for string in strings:
            assert string, f"{code}: untranslated {message.id!r}"
            assert set(re.findall(r"%\(\w+\)s", string)) == wanted, (
                f"{code}: placeholders {message.id!r}"
            )


@pytest.mark.parametrize("lang", ["en", *sorted(i18n.catalogue_paths())])
@pytest.mark.parametrize("path", PUBLIC_PAGES)
def test_every_page_renders_in_every_language(client: Any, lang: str, path: str) -> None:
    response = client.get(f"{path}?lang={lang}")
    assert response.status_code == 200
    assert f'<html lang="{lang}"' in response.text


def test_errors_outside_the_api_are_pages_a_reporter_can_read(client: Any) -> None:
    missing = client.get("/no-such-page", headers={"accept-language": "uk"})
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert "Сторінку не знайдено" in missing.text
    too_big = client.post(
        "/", data={"url": "http://example.org/", "category": "csam", "description": "x" * 40000}
    )
    assert too_big.status_code == 413
    assert "Too much text" in too_big.text
    assert client.get("/api/v1/missing").json()["code"] == "not_found"
