"""No staff page makes a browser contact anything but the hotline.

Realistic data goes through the real pipeline (a reported gallery on 127.0.0.1 with
synthetic pictures, one on a known list; a report whose description holds an outside
URL and HTML; a queued target on an outside host). Then every role, signed in through
the pages, crawls every staff page it can reach by following same-origin links and GET
forms, in every language. Every address in every page (attributes, inline styles,
the style sheet, redirects) must be a path of this site, a fragment, or a data: image;
no attribute holds a reported URL, its host or any outside host; reported URLs and
descriptions appear as text only; the headers keep the browser on this site.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient
from selectolax.lexbor import LexborHTMLParser, LexborNode

from hotline import i18n
from hotline.authz import allowed
from hotline.db import session_scope, utcnow
from hotline.models import Role
from hotline.web import create_app
from reporting import service as intake
from reporting.models import ReportCategory, ReportSource, Target, TargetStatus
from reporting.schemas import ReportCreate
from tests.fixtures import images
from tests.fixtures.pipeline import process
from tests.fixtures.servers import LocalHTTPServer
from tests.fixtures.staff import PASSWORD, csrf, enrol, home, make_user
from triage.hashlists import import_list

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
OUTSIDE_HOST = "evil.example"
DESCRIPTION = (
    "Found through https://evil.example/x, it shows <img src=https://evil.example/a.png> "
    'and <a href="//evil.example/b" style="background:url(https://evil.example/c)">more</a>'
    '<meta http-equiv="refresh" content="0;url=https://evil.example/r">'
)
OUTSIDE_TARGET = "https://files.imagehost-7f3a.net/gallery/7?album=2"  # stored, never fetched
C0_AND_SPACE = "".join(map(chr, range(0x21)))
PAGE_LIMIT = 400
"""The most pages one crawl may visit; reaching it fails the test (a link loop)."""

# Attributes whose value is an address.
URL_ATTRIBUTES = frozenset(
    {
        "href",
        "src",
        "action",
        "formaction",
        "poster",
        "data",
        "cite",
        "background",
        "manifest",
        "ping",
        "longdesc",
        "codebase",
        "xlink:href",
        "lowsrc",
        "dynsrc",
    }
)
SRCSET_ATTRIBUTES = frozenset({"srcset", "imagesrcset"})
# A data-* value is taken for an address when it looks like one.
LOOKS_LIKE_URL = re.compile(r"^\s*(/|[a-z][a-z0-9+.-]*:|www\.)", re.IGNORECASE)
CSS_URL = re.compile(
    r"""url\(\s*(?:"([^"]*)"|'([^']*)'|([^)]*?))\s*\)|@import\s+(?:"([^"]*)"|'([^']*)')""",
    re.IGNORECASE,
)
SAFE_VIEW = re.compile(r"^/api/v1/targets/\d+/media/\d+/view$")
# Pages whose GET changes the client's state: visited on purpose, not by the crawler.
NOT_CRAWLED = ("/staff/language", "/staff/logout")


@dataclass(frozen=True)
class Reported:
    gallery: int
    single: int
    outside: int
    canonical_urls: tuple[str, ...]
    forbidden: tuple[str, ...]
    """Lower-case strings that no attribute may contain."""


def _process(target_id: int) -> None:
    outcome = process(target_id)
    assert outcome.status == TargetStatus.queued


def _report(
    url: str, category: ReportCategory, description: str | None = None, *, loopback: bool = True
) -> int:
    with session_scope() as session:
        _, created = intake.submit_report(
            session,
            ReportCreate(url=url, category=category, description=description),
            source=ReportSource.api,
            now=utcnow(),
            max_url_length=4096,
            allow_networks=LOOPBACK if loopback else (),
        )
        return created.target_id


def _gallery(server: LocalHTTPServer, name: str, pictures: dict[str, bytes]) -> str:
    tags = []
    for path, body in pictures.items():
        server.route(path, body=body)
        tags.append(f'<a href="{path}"><img src="{path}" srcset="{path} 2x"></a>')
    html = f"<!doctype html><html><body>{''.join(tags)}</body></html>".encode()
    return server.route(f"/{name}", body=html, headers={"content-type": "text/html"})


def report_realistic_targets(server: LocalHTTPServer) -> Reported:
    known = images.jpeg(41, (640, 480))
    listing = f"sha256,category\n{hashlib.sha256(known).hexdigest()},1\n"
    with session_scope() as session:
        import_list(session, io.BytesIO(listing.encode()), list_name="national-list")
    gallery_url = _gallery(
        server,
        "gallery",
        {
            "/g/1.png": images.png(42, (400, 300), texture="checker"),
            "/g/2.jpg": images.jpeg(43, (640, 480)),
            "/g/known.jpg": known,
        },
    )
    gallery = _report(gallery_url, ReportCategory.csam, DESCRIPTION)
    _process(gallery)
    _report(gallery_url, ReportCategory.grooming, "javascript:alert(1) seen again")
    single = _report(
        _gallery(server, "single", {"/s/1.jpg": images.jpeg(44, (320, 240))}),
        ReportCategory.other,
    )
    _process(single)
    outside = _report(OUTSIDE_TARGET, ReportCategory.csam, "mirror", loopback=False)
    with session_scope() as session:
        target = session.get(Target, outside)
        assert target is not None
        target.status, target.priority, target.hosting_country = TargetStatus.queued, 50, "NL"
    with session_scope() as session:
        rows = [session.get(Target, i) for i in (gallery, single, outside)]
        canonical = tuple(t.canonical_url for t in rows if t is not None)
        hosts = {t.host for t in rows if t is not None and t.host != t.registered_domain}
    assert len(canonical) == 3
    netlocs = {urlsplit(url).netloc for url in canonical}
    without_scheme = {url.split("://", 1)[1] for url in canonical}
    forbidden = {*canonical, *without_scheme, *netlocs, *hosts, OUTSIDE_HOST, "://", "%3a%2f%2f"}
    # The registered domain of a site may appear in a filter (?domain=...), and for an IP
    # literal it is the host itself; the host with its port, or a host name that is not
    # the registered domain, is an address and may not.
    return Reported(
        gallery, single, outside, canonical, tuple(sorted(s.lower() for s in forbidden))
    )


# Checking one page -------------------------------------------------------------------


def _clean(value: str) -> str:
    # What a browser does to an address first: strip spaces and C0 controls at the
    # ends, drop tabs and newlines anywhere.
    return re.sub(r"[\t\n\r]", "", value).strip(C0_AND_SPACE)


def _is_image_data(value: str) -> bool:
    media_type = value[5:].split(",", 1)[0].split(";", 1)[0].strip().lower()
    return media_type == "" or media_type.startswith("image/")


def address_problem(value: str, *, data_image_allowed: bool) -> str | None:
    """Why a browser might leave the site for this address; None if it stays."""
    address = _clean(value)
    if address == "" or address.startswith("#"):
        return None
    if address.lower().startswith("data:"):
        if data_image_allowed and _is_image_data(address):
            return None
        return "a data: address outside an image"
    if not address.startswith("/"):
        return "not a path of this site"
    if address.startswith("//") or "\\" in address:
        return "another host (scheme-relative)"
    return None


def css_addresses(css: str) -> Iterator[str]:
    for match in CSS_URL.finditer(css):
        yield next(g for g in match.groups() if g is not None)


def _srcset_addresses(value: str) -> Iterator[str]:
    for candidate in value.split(","):
        if candidate.strip():
            yield candidate.strip().split()[0]


def _refresh_address(content: str) -> str | None:
    match = re.search(r"url\s*=\s*['\"]?([^'\"]*)", content, re.IGNORECASE)
    return match.group(1) if match else None


def page_problems(html: str, reported: Reported) -> tuple[list[str], list[str]]:
    """(problems, addresses of this site found in the page) of one HTML page."""
    problems: list[str] = []
    addresses: list[str] = []
    tree = LexborHTMLParser(html)

    def check(node: LexborNode, name: str, value: str, *, image: bool = False) -> None:
        why = address_problem(value, data_image_allowed=image)
        if why:
            problems.append(f"<{node.tag} {name}={value!r}>: {why}")
        elif _clean(value).startswith("/") and name not in ("action", "formaction"):
            # Forms are submitted by the crawler only when they GET (see below).
            addresses.append(_clean(value))

    for node in tree.css("*"):
        tag = node.tag or ""
        rel = (node.attributes.get("rel") or "").lower().split()
        image = tag in ("img", "source", "input") or (tag == "link" and "icon" in rel)
        if tag == "base":
            problems.append("<base> changes where every relative address points")
        for name, raw in node.attributes.items():
            if raw is None:
                continue
            name = name.lower()
            value = raw
            if name in URL_ATTRIBUTES:
                check(node, name, value, image=image and name in ("src", "href"))
            elif name in SRCSET_ATTRIBUTES:
                for address in _srcset_addresses(value):
                    check(node, name, address, image=True)
            elif name.startswith("data-") and LOOKS_LIKE_URL.match(value):
                check(node, name, value)
            elif name == "style":
                for address in css_addresses(value):
                    check(node, "style url()", address, image=True)
            elif (
                tag == "meta"
                and name == "content"
                and (node.attributes.get("http-equiv") or "").lower() == "refresh"
            ):
                check(node, "refresh", _refresh_address(value) or "")
            if value.lower().startswith("data:") and _is_image_data(value):
                continue  # an image drawn here (e.g. the QR code) cannot load anything
            lowered = value.lower()
            for needle in reported.forbidden:
                if needle in lowered:
                    problems.append(f"<{tag} {name}={value!r}> holds {needle!r}")
    for node in tree.css("style"):
        for address in css_addresses(node.text(deep=True)):
            check(node, "url()", address, image=True)
    for node in tree.css("script"):
        inline = node.text(deep=True).lower()
        if inline.strip():
            problems.append("an inline <script> (the CSP refuses it; keep scripts in files)")
        if any(needle in inline for needle in reported.forbidden):
            problems.append("an inline <script> holds an outside address")
    return problems, addresses


def header_problems(headers: Any, *, html: bool) -> list[str]:
    problems = []
    if headers.get("referrer-policy") != "no-referrer":
        problems.append(f"Referrer-Policy is {headers.get('referrer-policy')!r}")
    policy = headers.get("content-security-policy", "")
    directives = {
        parts[0].lower(): parts[1:] for parts in (d.split() for d in policy.split(";")) if parts
    }
    if html and directives.get("default-src") != ["'self'"]:
        problems.append(f"default-src is {directives.get('default-src')!r}, not 'self'")
    if not html and directives.get("default-src") not in (["'self'"], ["'none'"]):
        problems.append(f"default-src is {directives.get('default-src')!r}")
    for directive, sources in directives.items():
        for source in sources:
            keyword = source.startswith("'") and source.endswith("'")
            # data: pictures in the page; blob: on staff pages, those the script fetched here
            image_data = source in ("data:", "blob:") and directive == "img-src"
            if not (keyword or image_data):
                problems.append(f"the CSP allows {source!r} in {directive}")
    return problems


# The crawler --------------------------------------------------------------------------


@dataclass
class Crawl:
    pages: dict[str, str] = field(default_factory=dict)
    """Every HTML page visited (path and query) and its HTML."""
    resources: dict[str, int] = field(default_factory=dict)
    """Every other response (style sheet, script, safe view) and its status."""
    problems: list[str] = field(default_factory=list)


def _followed(address: str) -> bool:
    path = urlsplit(address).path
    if path.startswith(NOT_CRAWLED):
        return False
    return path == "/staff" or path.startswith("/staff/") or bool(SAFE_VIEW.match(path))


def _option_value(option: LexborNode) -> str:
    value = option.attributes.get("value")
    return value if value is not None else option.text().strip()


def _get_form_queries(page_url: str, html: str) -> Iterator[str]:
    """The addresses a browser would load by submitting each GET form: once as it is,
    and once for each choice of each of its menus."""
    for form in LexborHTMLParser(html).css("form"):
        if (form.attributes.get("method") or "get").lower() != "get":
            continue
        action = urljoin(page_url, form.attributes.get("action") or page_url)
        fields: list[tuple[str, str]] = []
        menus: list[tuple[int, list[str]]] = []
        for node in form.css("input, select, textarea"):
            name = node.attributes.get("name")
            kind = (node.attributes.get("type") or "text").lower()
            if not name or kind in ("submit", "button", "image", "reset", "file"):
                continue
            if kind in ("checkbox", "radio") and "checked" not in node.attributes:
                continue
            if node.tag == "select":
                options = [_option_value(o) for o in node.css("option")]
                chosen = [
                    _option_value(o) for o in node.css("option") if "selected" in o.attributes
                ]
                menus.append((len(fields), options))
                fields.append((name, (chosen or options or [""])[0]))
            elif node.tag == "textarea":
                fields.append((name, node.text()))
            else:
                fields.append((name, node.attributes.get("value") or ""))
        base = action.split("?", 1)[0]
        yield f"{base}?{urlencode(fields)}"
        for index, options in menus:
            for option in options:
                chosen_fields = list(fields)
                chosen_fields[index] = (fields[index][0], option)
                yield f"{base}?{urlencode(chosen_fields)}"


def crawl(
    client: Any, seeds: list[str], reported: Reported, *, language: str | None = None
) -> Crawl:
    """Visit every staff page reachable from ``seeds`` by same-origin links and GET forms."""
    found = Crawl()
    queue = deque(seeds)
    seen = set(seeds)
    while queue:
        url = queue.popleft()
        assert len(found.pages) < PAGE_LIMIT, f"more than {PAGE_LIMIT} pages: a link loop?"
        response = client.get(url, follow_redirects=False)
        where = f"{url} ({response.status_code})"
        assert response.status_code < 500, where
        html = response.headers.get("content-type", "").startswith("text/html")
        found.problems += [f"{where}: {p}" for p in header_problems(response.headers, html=html)]
        discovered: list[str] = []
        if response.is_redirect:
            location = response.headers["location"]
            why = address_problem(location, data_image_allowed=False)
            if why or any(n in location.lower() for n in reported.forbidden):
                found.problems.append(f"{where}: redirects to {location!r}")
            else:
                discovered.append(location)
        elif html:
            found.pages[url] = response.text
            if language is not None and response.headers.get("content-language") != language:
                found.problems.append(f"{where}: not in {language}")
            problems, addresses = page_problems(response.text, reported)
            found.problems += [f"{where}: {p}" for p in problems]
            discovered += addresses
            discovered += _get_form_queries(url, response.text)
        else:
            found.resources[url] = response.status_code
            if response.headers.get("content-type", "").startswith("text/css"):
                for address in css_addresses(response.text):
                    why = address_problem(address, data_image_allowed=True)
                    if why:
                        found.problems.append(f"{where}: url({address!r}): {why}")
            script = "javascript" in response.headers.get("content-type", "")
            if script and re.search(r"[a-z][a-z0-9+.-]*://", response.text, re.IGNORECASE):
                found.problems.append(f"{where}: the script names an absolute address")
        for address in discovered:
            absolute = urljoin(url, address)
            if address_problem(absolute, data_image_allowed=False) is None:
                key = urlsplit(absolute)
                target = key.path + (f"?{key.query}" if key.query else "")
                if _followed(target) and target not in seen:
                    seen.add(target)
                    queue.append(target)
    return found


# The tests ----------------------------------------------------------------------------


@pytest.fixture
def reported(client: Any, http_server: LocalHTTPServer) -> Reported:
    return report_realistic_targets(http_server)


def _post_form(client: Any, page: str, action: str) -> Any:
    """Submit the first form of ``page`` posting to ``action`` as a browser would."""
    tree = LexborHTMLParser(page)
    for form in tree.css("form"):
        if form.attributes.get("action") == action:
            fields = {
                node.attributes["name"]: node.attributes.get("value") or ""
                for node in form.css("input")
                if node.attributes.get("name")
            }
            return client.post(action, data=fields, follow_redirects=False)
    raise AssertionError(f"no form posts to {action}")


def _assert_target_page_shows_addresses_as_text(html: str, reported: Reported) -> None:
    tree = LexborHTMLParser(html)
    shown = tree.css_first("#canonical-url")
    assert shown is not None
    assert shown.text().strip() == reported.canonical_urls[0]
    descriptions = [node.text() for node in tree.css(".description")]
    assert DESCRIPTION in descriptions  # escaped: the markup is text, not elements
    # Every media item is offered through the safe view (loaded at once, or on request).
    prefix = f"/api/v1/targets/{reported.gallery}/media/"
    safe_views = {
        value.split("/")[6]
        for img in tree.css("img")
        for value in img.attributes.values()
        if value and value.startswith(prefix)
    }
    assert len(safe_views) == 3


@pytest.mark.parametrize("role", [Role.auditor, Role.admin, Role.supervisor, Role.analyst])
def test_no_staff_page_points_a_browser_anywhere_but_the_hotline(
    role: Role, reported: Reported
) -> None:
    with TestClient(create_app(), client=("127.0.0.1", 50000)) as browser:
        enrol(browser, f"{role.value}@hotline.example", role)
        seeds = ["/staff", home(role), "/staff/targets/999999"]
        claimed: str | None = None
        if allowed(role, "queue.claim"):
            # "Next item" as the analyst presses it: the item page then shows the claim.
            taken = _post_form(browser, browser.get("/staff/queue").text, "/staff/queue/next")
            assert taken.status_code == 303
            claimed = taken.headers["location"]
            seeds.append(claimed)
        problems: list[str] = []
        visited: set[str] = set()
        for language in i18n.available_languages():
            chosen = browser.get(
                f"/staff/language?lang={language.code}&next={home(role)}", follow_redirects=False
            )
            assert chosen.headers["location"] == home(role)
            found = crawl(browser, seeds, reported, language=language.code)
            problems += [f"[{role.value}, {language.code}] {p}" for p in found.problems]
            visited |= set(found.pages) | set(found.resources)
        if claimed is not None:
            release = _post_form(browser, browser.get(claimed).text, f"{claimed}/release")
            assert release.status_code == 303

    assert not problems, "\n".join(problems[:30])
    gallery_page = f"/staff/targets/{reported.gallery}"
    if allowed(role, "target.view"):
        # The crawl reached the items and their media through the links alone.
        assert {gallery_page, f"/staff/targets/{reported.outside}"} <= visited
        assert any(SAFE_VIEW.match(urlsplit(v).path) for v in visited)
        assert "/staff/static/staff.css" in visited
    else:
        assert gallery_page not in visited


def test_the_gallery_page_shows_the_reported_address_and_description_as_text(
    client: Any, reported: Reported
) -> None:
    enrol(client, "ana@hotline.example", Role.analyst)
    page = client.get(f"/staff/targets/{reported.gallery}")
    assert page.status_code == 200
    _assert_target_page_shows_addresses_as_text(page.text, reported)
    problems, _ = page_problems(page.text, reported)
    assert problems == []


def test_pages_before_sign_in_point_nowhere_else(client: Any, reported: Reported) -> None:
    found = crawl(client, ["/staff", "/staff/login", "/staff/queue"], reported)
    assert "/staff/login" in found.pages
    wrong = client.post(
        "/staff/login", data={"email": "nobody@hotline.example", "password": "x" * 12}
    )
    assert wrong.status_code == 401
    make_user("new@hotline.example", Role.analyst)
    started = client.post(
        "/staff/login",
        data={"email": "new@hotline.example", "password": PASSWORD},
        follow_redirects=False,
    )
    assert started.headers["location"] == "/staff/enrol"
    enrolling = crawl(client, ["/staff/enrol"], reported)
    assert 'src="data:image/svg+xml' in enrolling.pages["/staff/enrol"]
    problems = list(found.problems) + list(enrolling.problems)
    for page in (wrong.text,):
        problems += page_problems(page, reported)[0]
    problems += header_problems(wrong.headers, html=True)
    assert not problems, "\n".join(problems[:30])
    assert csrf(enrolling.pages["/staff/enrol"])


def test_the_language_switch_and_sign_in_never_redirect_elsewhere(
    client: Any, reported: Reported
) -> None:
    for outside in (
        "https://evil.example/x",
        "//evil.example/x",
        "/\\evil.example/x",
        reported.canonical_urls[0],
    ):
        chosen = client.get(f"/staff/language?lang=uk&next={outside}", follow_redirects=False)
        assert address_problem(chosen.headers["location"], data_image_allowed=False) is None
        assert "evil.example" not in chosen.headers["location"]


def test_the_checks_catch_what_would_leave_the_site(reported: Reported) -> None:
    """The checker itself: each of these would make a browser contact another site."""
    url = reported.canonical_urls[0]
    leaks = [
        f'<a href="{url}">open</a>',
        f'<img src="{url}">',
        '<img srcset="/a.png 1x, https://evil.example/b.png 2x">',
        '<form action="//evil.example/f"></form>',
        '<button formaction="https://evil.example/f">x</button>',
        '<video poster="https://evil.example/p.jpg"></video>',
        '<div data-src="https://evil.example/d"></div>',
        '<meta http-equiv="refresh" content="0; url=https://evil.example/r">',
        "<div style=\"background: url('https://evil.example/s.png')\"></div>",
        "<style>body { background: url(//evil.example/s.png) }</style>",
        '<a href="/\\evil.example/x">x</a>',
        '<a href="java\tscript:alert(1)">x</a>',
        '<iframe src="data:text/html,hi"></iframe>',
        f'<input value="{url}">',
        f'<span title="see {urlsplit(url).netloc}">x</span>',
        '<base href="/">',
    ]
    for leak in leaks:
        problems, _ = page_problems(f"<!doctype html><html><body>{leak}</body></html>", reported)
        assert problems, leak
    fine = (
        '<a href="/staff/queue?domain=imagehost-7f3a.net#x">x</a>'
        '<img src="data:image/png;base64,AA">'
        f'<link rel="icon" href="data:,"><code>{url}</code>'
    )
    assert page_problems(fine, reported)[0] == []
    outside = {"referrer-policy": "no-referrer", "content-security-policy": "default-src *"}
    assert header_problems(outside, html=True)
