"""The media links of a fetched page: which images and videos a reported page shows.

Owns the answer to "what on this page should be fetched and hashed": ``img`` (``src``,
``srcset`` and the ``data-src``/``data-srcset`` of lazy loaders), ``picture``/``video``
``source``, ``video`` (``src``, ``poster``), Open Graph and Twitter card images and
videos, and ``a href`` links to image or video files.

Invariants: pure (no network, no logging); every link is an absolute http(s) URL
without fragment, resolved as a browser would (``<base href>``, then the page URL,
WHATWG URL parsing by ada-url); links are unique, in document order, at most
``limit``; any input, however broken, gives a list rather than an exception. Links
are not checked for public hosts here: the fetcher refuses those when asked.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator

import ada_url
from selectolax.lexbor import LexborHTMLParser, LexborNode

__all__ = ["media_links"]

# Names of the files whose types hashing recognises (an <a href> to one is a media link;
# the type itself is then read from the bytes).
_MEDIA_EXTENSIONS = frozenset(
    {
        *("jpg", "jpeg", "jpe", "jfif", "pjpeg", "png", "apng", "gif", "webp", "bmp", "dib"),
        *("svg", "eps", "mpo"),
        *("mp4", "m4v", "webm", "mov", "qt", "avi", "mkv", "flv", "wmv", "asf"),
        *("mpg", "mpeg", "mpe", "m2v", "ts", "m2ts", "3gp", "3g2"),
    }
)
_META_NAMES = frozenset(
    {
        "og:image",
        "og:image:url",
        "og:image:secure_url",
        "og:video",
        "og:video:url",
        "og:video:secure_url",
        "twitter:image",
        "twitter:image:src",
    }
)
_SELECTOR = "base, img, source, video, meta, a"
_WEB_SCHEMES = frozenset({"http:", "https:"})
_HTML_SPACE = " \t\n\f\r"

# Where browsers look for a <meta> charset before decoding (WHATWG prescans 1024 bytes;
# a little more is read to catch late declarations).
_PRESCAN_BYTES = 4096
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9_.:\-]+)""", re.I)
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# WHATWG Encoding Standard: these labels mean windows-1252; a <meta> claiming UTF-16
# means UTF-8 (the bytes were readable as ASCII to be found).
_LABEL_ALIASES = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "ascii": "cp1252",
    "us-ascii": "cp1252",
    "x-user-defined": "cp1252",
    "utf-16": "utf-8",
    "utf-16le": "utf-8",
    "utf-16be": "utf-8",
    "utf-16-le": "utf-8",
    "utf-16-be": "utf-8",
}


def media_links(html: bytes | str, base_url: str, *, limit: int) -> list[str]:
    """Absolute http(s) URLs of the media a page shows, unique, in document order."""
    if limit <= 0:
        return []
    text = _decode(html) if isinstance(html, bytes) else html
    # Lone surrogates cannot be handed to the parser (it takes UTF-8).
    text = text.encode("utf-8", "replace").decode("utf-8")
    nodes = LexborHTMLParser(text).css(_SELECTOR)
    base = base_url
    for node in nodes:
        if node.tag == "base" and (href := node.attributes.get("href")) is not None:
            base = _join(base_url, href) or base_url
            break
    links: dict[str, None] = {}
    for node in nodes:
        for value, media_only in _candidates(node):
            url = _resolve(base, value)
            if url is None or (media_only and not _has_media_extension(url)):
                continue
            links.setdefault(url)
            if len(links) >= limit:
                return list(links)
    return list(links)


def _candidates(node: LexborNode) -> Iterator[tuple[str, bool]]:
    """(raw URL, only if it names a media file) of one element, in attribute order."""
    attributes = node.attributes
    tag = node.tag

    def attr(name: str) -> str | None:
        value = attributes.get(name)
        return value if value else None

    def srcset(name: str) -> Iterator[tuple[str, bool]]:
        for url in _srcset_urls(attr(name) or ""):
            yield url, False

    if tag == "img":
        for name in ("src", "data-src"):
            if value := attr(name):
                yield value, False
        yield from srcset("srcset")
        yield from srcset("data-srcset")
    elif tag == "source":
        parent = node.parent
        # <audio><source src> is sound, not media we hash.
        if parent is not None and parent.tag == "video" and (value := attr("src")):
            yield value, False
        yield from srcset("srcset")
        yield from srcset("data-srcset")
    elif tag == "video":
        for name in ("src", "poster"):
            if value := attr(name):
                yield value, False
    elif tag == "meta":
        key = (attr("property") or attr("name") or "").strip().lower()
        if key in _META_NAMES and (value := attr("content")):
            yield value, False
    elif tag == "a" and (value := attr("href")):
        yield value, True


def _srcset_urls(value: str) -> list[str]:
    """The URLs of a srcset, by the HTML standard's candidate parsing (descriptors skipped).

    A URL may itself contain commas; a candidate ends at a comma that follows the URL
    directly, or at the first comma outside parentheses in its descriptors.
    """
    urls: list[str] = []
    position, end = 0, len(value)
    while position < end:
        while position < end and (value[position] in _HTML_SPACE or value[position] == ","):
            position += 1
        start = position
        while position < end and value[position] not in _HTML_SPACE:
            position += 1
        url = value[start:position]
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            depth = 0
            while position < end:
                char = value[position]
                position += 1
                if char == "(":
                    depth += 1
                elif char == ")" and depth:
                    depth -= 1
                elif char == "," and not depth:
                    break
        if url:
            urls.append(url)
    return urls


def _join(base: str, value: str) -> str | None:
    try:
        return str(ada_url.join_url(base, value))
    except (ValueError, UnicodeError):
        pass
    try:  # an unusable base still lets absolute URLs through
        return str(ada_url.URL(value).href)
    except (ValueError, UnicodeError):
        return None


def _resolve(base: str, value: str) -> str | None:
    value = value.strip(_HTML_SPACE)
    if not value:
        return None  # an empty src names the page itself, not media
    joined = _join(base, value)
    if joined is None:
        return None
    try:
        url = ada_url.URL(joined)
    except (ValueError, UnicodeError):  # pragma: no cover - join_url gave a valid URL
        return None
    if url.protocol not in _WEB_SCHEMES or not url.hostname:
        return None
    url.hash = ""
    return str(url.href)


def _has_media_extension(url: str) -> bool:
    path = str(ada_url.URL(url).pathname)
    name = path.rsplit("/", 1)[-1]
    return "." in name and name.rsplit(".", 1)[-1].lower() in _MEDIA_EXTENSIONS


def _decode(data: bytes) -> str:
    """Bytes to text as a browser would without headers: BOM, then <meta> charset, else UTF-8."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, "replace")
    match = _META_CHARSET.search(data[:_PRESCAN_BYTES])
    if match is not None:
        label = match.group(1).decode("ascii").lower()
        try:
            encoding = codecs.lookup(_LABEL_ALIASES.get(label, label)).name
            if not encoding.startswith(("utf-16", "utf-32")):
                return data.decode(encoding, "replace")
        except (LookupError, UnicodeError, ValueError):
            pass  # unknown or non-text codec ("base64", "idna" with replace): UTF-8
    return data.decode("utf-8", "replace")
