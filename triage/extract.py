"""The media links of a fetched page: which images and videos a reported page shows.

Owns the answer to "what on this page should be fetched and hashed": ``img`` (``src``,
``srcset`` and the attributes where lazy loaders keep the real picture until a script
moves it there, ``data-src``, ``data-lazy-src``, ``data-original`` …; ``<image>`` is
read as ``<img>``, as browsers do), ``picture``/``video`` ``source``, ``video`` (``src``,
``poster``), SVG ``<image>`` (``href``, ``xlink:href``), Open Graph and Twitter card
images and videos, schema.org pictures and videos (microdata ``itemprop``, JSON-LD),
``<link rel=preload as=image>`` and ``rel=image_src``, ``<input type=image>``,
``embed``/``object`` showing an image or a video, ``a href`` links to image or video
files, and any element's background pictures (``url()`` in its ``style`` attribute, or
in the attributes of lazy loaders), and the backgrounds of the rules of ``<style>``
elements.

Invariants: pure (no network, no logging); every link is an absolute http(s) URL
without fragment, resolved as a browser would (``<base href>``, then the page URL,
WHATWG URL parsing by ada-url), other than the page's own URL; links are unique, in
document order, at most ``limit``: past the limit each picture's main link (the first
usable one of its element: a lazy loader's picture, else ``src``, else the first
``srcset`` candidate) comes before the other sizes, formats and placeholders of the same
picture; any input, however broken, gives a list rather than an exception.
Links are not checked for public hosts here: the fetcher refuses those when asked.

The page is read by libxml2's HTML tokenizer (lxml, an HTML5 tokenizer since libxml2
2.14) as a stream of start and end tags, with no tree built: time and memory stay
linear in the page whatever its markup. (An HTML5 tree builder, lexbor's before, takes
quadratic or worse time and memory on pages of unclosed or misnested tags: 82 kB of
them held a worker for 23 s and 5 GB.) CSS is read by tinycss2's tokenizer and parser
(no recursion, linear), within a budget per page: it is pure Python.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import re
import urllib.parse
from collections.abc import Iterable, Iterator
from email.message import Message

import ada_url
import tinycss2
import webencodings
from lxml import etree

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
_TAGS = frozenset(
    {"base", "img", "image", "source", "video", "meta", "link", "a", "input", "embed", "object"}
)
# Microdata (schema.org) naming a picture or a video file: <meta itemprop content>,
# <link itemprop href>.
_ITEMPROPS = frozenset({"image", "contenturl", "thumbnailurl"})
# The keys of JSON-LD (schema.org) whose values are pictures or video files, as a URL,
# a list, or an object (an ImageObject, a VideoObject) with a url or contentUrl. Not
# "logo" (the publisher's), nor "embedUrl" (a player's page).
_LINKED_DATA_KEYS = frozenset({"image", "contentUrl", "thumbnailUrl", "thumbnail"})
_LINKED_DATA_OBJECT_KEYS = frozenset({"url", "contentUrl"})  # of such an object
_LINKED_DATA_TYPE = "application/ld+json"
# Characters of JSON-LD read per page (json.loads takes ~10 ms a megabyte), and links
# taken from it: a page of a hundred thousand products does not make as many candidates.
_LINKED_DATA_BUDGET = 1_000_000
_LINKED_DATA_LINKS = 1_000
_FOREIGN = frozenset({"svg", "math"})
_WEB_SCHEMES = frozenset({"http:", "https:"})
_HTML_SPACE = " \t\n\f\r"

# Where browsers look for a <meta> charset before decoding (WHATWG prescans 1024 bytes;
# a little more is read to catch late declarations).
_PRESCAN_BYTES = 4096
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# Where lazy loaders keep an <img>'s (or a video's, or its <source>'s) picture until a
# script, once it scrolls into view, moves it into src or srcset; src then holds a
# placeholder (a 1x1 GIF, a data: URI, a spinner). lazysizes, vanilla-lazyload, lozad,
# jQuery Lazy, Lazy Load XT and the WordPress plugins built on them (Smush, LiteSpeed,
# a3, Autoptimize): data-src; WP Rocket, Jetpack, BJ Lazy Load: data-lazy-src; jQuery
# Lazy Load (tuupola) and its forks: data-original, data-original-src; WP Rocket before
# 2.0: data-lazy-original; Slick carousel: data-lazy.
_LAZY_SRC = (
    "data-src",
    "data-lazy-src",
    "data-original",
    "data-original-src",
    "data-lazy-original",
    "data-lazy",
)
_LAZY_SRCSET = ("data-srcset", "data-lazy-srcset")
# lazysizes (unveilhooks) and vanilla-lazyload: a video's poster.
_LAZY_POSTER = ("data-poster",)
_LAZY = frozenset((*_LAZY_SRC, *_LAZY_SRCSET, *_LAZY_POSTER))
# Where lazy loaders keep an element's background picture until a script sets its
# background-image, and what the attribute holds: a URL, or CSS with url() (data-bg:
# lazysizes' unveilhooks, vanilla-lazyload, Lazy Load XT, and scripts that set the whole
# background; data-background: Swiper, many themes); URLs separated by commas (lozad);
# CSS (vanilla-lazyload's several layers, image sets and high-density versions); srcsets
# separated by "|" (lazysizes' bgset).
_LAZY_BACKGROUNDS = (
    ("data-bg", "url"),
    ("data-background", "url"),
    ("data-background-image", "urls"),
    ("data-bg-multi", "css"),
    ("data-bg-set", "css"),
    ("data-bgset", "srcsets"),
    ("data-bg-hidpi", "url"),
    ("data-bg-multi-hidpi", "css"),
)
_DECORATED = frozenset({"style", *(name for name, _ in _LAZY_BACKGROUNDS)})
# The CSS properties whose url() an element shows: its background, its content (a
# picture in place of the element or of its ::before and ::after, a way of showing
# pictures without an <img> that scrapers look for), and custom properties (--name),
# through which themes hand a picture to their stylesheet.
_BACKGROUND_PROPERTIES = frozenset({"background", "background-image", "content"})
_IMAGE_SETS = frozenset({"image-set", "-webkit-image-set"})
# Characters of CSS read per page from style attributes (and lazy attributes holding
# CSS), and as many from <style> elements: tinycss2 is pure Python, about 0.7 s a
# megabyte of ordinary CSS and 2.5 s of the worst; a text that does not fit in what is
# left is skipped. Half a megabyte holds the inline CSS of ordinary pages and bounds
# the worst at about 1.3 s each.
_CSS_BUDGET = 500_000
# tinycss2 converts a number token to int, which Python refuses past 4300 digits.
_LONG_DIGITS = re.compile(r"[0-9]{1000}")
_SURROGATES = re.compile("[\ud800-\udfff]")

# (raw value, picture it is a link of, only if it names a media file?). The first
# usable link of a picture is its main link, the others its alternatives (other sizes,
# formats, placeholders); a picture of None offers alternatives of another (a
# <picture>'s <source>, whose <img> holds the main link).
Candidate = tuple[str, int | None, bool]


def media_links(
    html: bytes | str,
    base_url: str,
    *,
    limit: int,
    content_type: str | None = None,
    svg_document: bool = False,
    inline: bool = False,
) -> list[str]:
    """Absolute http(s) URLs of the media a page shows, unique, in document order.

    ``content_type``: the response's Content-Type header, whose charset (after a byte
    order mark, before a ``<meta>``) decodes the bytes, as in browsers.
    ``svg_document``: the bytes are an SVG file: the links of its own ``<a>`` elements
    are left out (an SVG's hyperlinks are not what it shows), its ``<image>`` kept.
    ``inline``: pictures the page carries in itself (``data:image/…`` URLs) are kept
    too, as they are (see :func:`inline_picture`): they hold the picture's bytes.
    """
    if limit <= 0:
        return []
    text, codec = _decode(html, content_type) if isinstance(html, bytes) else (html, "utf-8")
    if text is None:
        return []  # the "replacement" encoding: browsers show one U+FFFD
    collector = _Collector(svg_document)
    _parse(text, collector)
    page = _resolve(base_url, base_url)
    base = base_url
    if collector.base is not None:
        # The first <base href> counts, even an empty one; a URL that fails to parse
        # or is data: or javascript: leaves the page's URL (HTML's frozen base URL).
        joined = _join(base_url, collector.base.strip(_HTML_SPACE))
        if joined is not None and not joined.startswith(("data:", "javascript:")):
            base = joined
    main: dict[str, int] = {}
    other: dict[str, int] = {}
    resolved: dict[str, str | None] = {}  # a placeholder on every <img> is resolved once
    pictures: set[int] = set()  # the pictures whose main link is chosen
    for position, (value, picture, media_only) in enumerate(collector.candidates):
        if value in resolved:
            url = resolved[value]
        elif inline and _is_inline_picture(value):
            url = resolved[value] = value.strip(_HTML_SPACE)
        else:
            url = resolved[value] = _resolve(base, _encode_query(value, codec))
        if url is None or url == page or (media_only and not _has_media_extension(url)):
            continue
        if picture is not None and picture not in pictures:
            pictures.add(picture)
            if url not in main:
                main[url] = other.pop(url, position)
                if len(main) >= limit:
                    break
        elif url not in main and url not in other and len(other) < limit:
            other[url] = position
    chosen = list(main.items())
    chosen += sorted(other.items(), key=lambda item: item[1])[: limit - len(chosen)]
    return [url for url, _ in sorted(chosen, key=lambda item: item[1])]


class _Collector:
    """An lxml parser target: the candidate links of the page's elements, in document
    order, and its first ``<base href>``. Sees start and end tags, and of the text only
    that of ``<style>`` elements and JSON-LD ``<script>`` elements."""

    def __init__(self, svg_document: bool) -> None:
        self.candidates: list[Candidate] = []
        self.base: str | None = None
        self._svg_document = svg_document
        self._seen: set[tuple[object, ...]] = set()  # elements that gave links
        self._open: list[str] = []
        self._foreign = 0  # open <svg>/<math> elements
        self._videos: list[int] = []  # per open <video>: its picture
        self._pictures = 0
        self._css_left = _CSS_BUDGET  # of style attributes
        self._style: list[str] | None = None  # the text of the open <style>, if read
        self._style_size = 0
        self._style_left = _CSS_BUDGET  # of <style> elements
        self._styles: set[str] = set()  # <style> texts read
        self._json: list[str] | None = None  # the text of the open JSON-LD <script>
        self._json_size = 0
        self._json_left = _LINKED_DATA_BUDGET
        self._json_links = _LINKED_DATA_LINKS

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        parent = self._open[-1] if self._open else None
        self._open.append(tag)
        if tag in _FOREIGN:
            self._foreign += 1
        if tag == "video":
            self._videos.append(self._picture())
        elif tag == "style":
            self._style, self._style_size = [], 0
        elif tag == "script" and _is_linked_data(attrib.get("type")):
            self._json, self._json_size = [], 0
        if tag not in _TAGS and _DECORATED.isdisjoint(attrib):
            return
        if tag == "video" or parent == "video":  # adding to a picture begun before
            self._links_of(tag, parent, attrib)
            return
        # An element given again adds nothing (a page repeating one costs nothing).
        key = (tag, self._foreign > 0, *attrib.items())
        if key not in self._seen:
            mark = len(self.candidates)
            self._links_of(tag, parent, attrib)
            if len(self.candidates) > mark:
                self._seen.add(key)

    def end(self, tag: str) -> None:
        # libxml2 closes elements innermost first, each start with one end.
        if self._open:
            closed = self._open.pop()
            if closed in _FOREIGN:
                self._foreign -= 1
            elif closed == "video" and self._videos:
                self._videos.pop()
            elif closed == "style":
                self._stylesheet()
            elif closed == "script":
                self._linked_data()

    def data(self, text: str) -> None:
        inside = self._open[-1] if self._open else None
        if self._style is not None and inside == "style":
            self._style.append(text)
            self._style_size += len(text)
            if self._style_size > self._style_left:
                self._style = None  # too large for what is left: skipped
        elif self._json is not None and inside == "script":
            self._json.append(text)
            self._json_size += len(text)
            if self._json_size > self._json_left:
                self._json = None  # too large for what is left: skipped

    def close(self) -> None:
        return None

    def _stylesheet(self) -> None:
        """The backgrounds of a ``<style>`` element's rules: alternatives of no picture,
        for a rule's selector may match no element, or an icon."""
        css = "".join(self._style or ())
        self._style = None
        if "(" not in css or len(css) > self._style_left or css in self._styles:
            return
        self._style_left -= len(css)
        self._styles.add(css)
        for url in _stylesheet_urls(css):
            self._add(url, None)

    def _linked_data(self) -> None:
        """The pictures and videos of a JSON-LD ``<script>`` (schema.org), each a
        picture of its own, as an Open Graph image is."""
        text = "".join(self._json or ())
        self._json = None
        if not text or self._json_links <= 0:
            return
        self._json_left -= len(text)
        for url in _linked_data_urls(text, self._json_links):
            self._add(url, self._picture())
            self._json_links -= 1

    def _picture(self) -> int:
        self._pictures += 1
        return self._pictures

    def _add(self, value: str | None, picture: int | None, media_only: bool = False) -> None:
        if value:
            self.candidates.append((value, picture, media_only))

    def _links(
        self, attrib: dict[str, str], names: tuple[str, ...], picture: int | None, srcset: bool
    ) -> None:
        for name in names:
            value = attrib.get(name)
            if value and srcset:
                for url in _srcset_urls(value):
                    self.candidates.append((url, picture, False))
            elif value and (not name.startswith("data-") or _may_be_link(value)):
                self.candidates.append((value, picture, False))

    def _links_of(self, tag: str, parent: str | None, attrib: dict[str, str]) -> None:
        picture = self._element(tag, parent, attrib) if tag in _TAGS else None
        if not _DECORATED.isdisjoint(attrib):
            # Its background is the element's own picture (for an img, the backdrop
            # of a blurred preview): after its other links, or a picture of its own.
            self._backgrounds(attrib, picture or self._picture())

    def _backgrounds(self, attrib: dict[str, str], picture: int) -> None:
        for name, holds in _LAZY_BACKGROUNDS:
            value = attrib.get(name)
            if not value:
                continue
            if holds == "css" or _looks_like_css(value):
                self._css(value, picture, whole=False)
            elif holds == "srcsets":
                for part in value.split("|"):
                    for url in _srcset_urls(part):
                        self._add(url, picture)
            else:
                for url in value.split(",") if holds == "urls" else (value,):
                    if _may_be_link(url):
                        self._add(url, picture)
        self._css(attrib.get("style"), picture, whole=True)

    def _css(self, css: str | None, picture: int, *, whole: bool) -> None:
        """The background links of a style attribute (``whole``) or of a CSS value."""
        # Without a parenthesis CSS holds no url() (a cheap test for most styles).
        if not css or "(" not in css or len(css) > self._css_left:
            return
        self._css_left -= len(css)
        urls = _style_urls(css) if whole else _value_urls(_tokens(css))
        for url in urls:
            self._add(url, picture)

    def _element(self, tag: str, parent: str | None, attrib: dict[str, str]) -> int | None:
        """Adds the element's links; returns its picture, if it has one."""
        get = attrib.get
        picture: int | None = None
        if tag == "image" and self._foreign:
            picture = self._picture()
            self._add(get("href") or get("xlink:href"), picture)  # SVG: its picture
        elif tag in ("img", "image"):
            picture = self._picture()
            if not _LAZY.isdisjoint(attrib):
                # A lazy loader's picture first: src then holds its placeholder.
                self._links(attrib, _LAZY_SRC, picture, srcset=False)
                self._links(attrib, _LAZY_SRCSET, picture, srcset=True)
            self._add(get("src"), picture)
            self._links(attrib, ("srcset",), picture, srcset=True)
        elif tag == "source":
            if parent == "video" and self._videos:  # <audio><source> is sound, not media
                self._links(attrib, (*_LAZY_SRC, "src"), self._videos[-1], srcset=False)
            # <picture>: its <img> holds the main link.
            self._links(attrib, (*_LAZY_SRCSET, "srcset"), None, srcset=True)
        elif tag == "video":
            self._links(attrib, (*_LAZY_SRC, "src"), self._videos[-1], srcset=False)
            picture = self._picture()
            self._links(attrib, (*_LAZY_POSTER, "poster"), picture, srcset=False)
        elif tag == "meta":
            key = (get("property") or get("name") or "").strip().lower()
            if key in _META_NAMES or _names_media(get("itemprop")):
                self._add(get("content"), self._picture())
        elif tag == "link":
            rel = (get("rel") or "").lower().split()
            preloaded = "preload" in rel and (get("as") or "").strip().lower() == "image"
            if preloaded or "image_src" in rel or _names_media(get("itemprop")):
                picture = self._picture()
                self._add(get("href"), picture)
                if preloaded:  # the srcset of the <img> it is preloaded for
                    self._links(attrib, ("imagesrcset",), picture, srcset=True)
        elif tag == "a":
            if not (self._svg_document and self._foreign):
                picture = self._picture()
                self._add(get("href"), picture, media_only=True)
        elif tag == "input":
            if (get("type") or "").lower() == "image":  # an image button
                picture = self._picture()
                self._add(get("src"), picture)
        elif tag in ("embed", "object"):
            # Shown as a picture or a video when it is one: by its type if it has one,
            # else by the name of its file (Flash, PDF or a page are not media).
            kind = (get("type") or "").strip().lower()
            if not kind or kind.startswith(("image/", "video/")):
                value = get("src") if tag == "embed" else get("data")
                picture = self._picture()
                self._add(value, picture, media_only=not kind)
        elif tag == "base" and self.base is None and "href" in attrib:
            self.base = attrib["href"]
        return picture


def _parse(text: str, target: object) -> None:
    """Feed the page to libxml2's HTML tokenizer; what it read before any error stays."""
    # Lone surrogates cannot be handed to libxml2 (it takes UTF-8).
    text = text.encode("utf-8", "replace").decode("utf-8")
    parser = etree.HTMLParser(
        target=target, recover=True, no_network=True, huge_tree=True, remove_comments=True
    )
    try:
        parser.feed(text)
        parser.close()
    except etree.LxmlError:  # pragma: no cover - recover=True parses anything
        pass


def _is_linked_data(kind: str | None) -> bool:
    return kind is not None and kind.split(";")[0].strip().lower() == _LINKED_DATA_TYPE


def _names_media(itemprop: str | None) -> bool:
    """Whether a microdata ``itemprop`` (names separated by spaces) names a picture."""
    return itemprop is not None and not _ITEMPROPS.isdisjoint(itemprop.lower().split())


def _linked_data_urls(text: str, most: int) -> list[str]:
    """The picture and video links of JSON-LD text, in document order, at most ``most``:
    the values of its image keys (a URL, a list of them, or an object with a ``url`` or
    ``contentUrl``) at any depth, walked without recursion."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python goes
        return []
    urls: list[str] = []
    # (a JSON value, whether it is the value of an image key)
    stack: list[tuple[object, bool]] = [(document, False)]
    while stack and len(urls) < most:
        value, is_media = stack.pop()
        if isinstance(value, str):
            if is_media:  # \uD800 names a surrogate, which URLs take as U+FFFD
                urls.append(_SURROGATES.sub("\ufffd", value))
        elif isinstance(value, list):
            stack.extend((item, is_media) for item in reversed(value))
        elif isinstance(value, dict):
            found = [
                (item, key in _LINKED_DATA_KEYS or (is_media and key in _LINKED_DATA_OBJECT_KEYS))
                for key, item in value.items()
                if isinstance(key, str)
            ]
            stack.extend(reversed(found))
    return urls


def _may_be_link(value: str) -> bool:
    """Whether a lazy loader's attribute may hold a link: ``data-lazy="true"`` is a flag
    of other scripts, and taken as a link it would push the ``src`` aside."""
    return "/" in value or "." in value


def _looks_like_css(value: str) -> bool:
    lowered = value.lower()
    return "url(" in lowered or "image-set(" in lowered


def _tokens(css: str) -> list[tinycss2.ast.Node]:
    # A long run of digits is cut by an escaped digit (\3N and a space), which reads
    # as the same digit in a URL, a string or a name, and ends a number token.
    css = _LONG_DIGITS.sub(lambda match: f"{match[0][:-1]}\\3{match[0][-1]} ", css)
    return tinycss2.parse_component_value_list(css, skip_comments=True)  # type: ignore[no-any-return]


def _style_urls(css: str) -> list[str]:
    """The background links of a ``style`` attribute's declarations."""
    values = [
        item.value
        for item in tinycss2.parse_blocks_contents(_tokens(css))
        if item.type == "declaration" and _is_background(item)
    ]
    return [url for value in values for url in _value_urls(value)]


def _stylesheet_urls(css: str) -> list[str]:
    """The background links of a style sheet's rules, nested rules included, in order."""
    urls: list[str] = []
    rules = tinycss2.parse_stylesheet(_tokens(css), skip_comments=True, skip_whitespace=True)
    stack: list[Iterator[tinycss2.ast.Node]] = [iter(rules)]
    while stack:  # without recursion: nesting is the page's to choose
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif item.type == "declaration" and _is_background(item):
            urls.extend(_value_urls(item.value))
        elif item.type in ("qualified-rule", "at-rule") and item.content is not None:
            # A rule's declarations and nested rules; an at-rule's (@media, @supports …)
            # rules. @import and @font-face name style sheets and fonts, not pictures.
            contents = tinycss2.parse_blocks_contents(
                item.content, skip_comments=True, skip_whitespace=True
            )
            stack.append(iter(contents))
    return urls


def _is_background(declaration: tinycss2.ast.Declaration) -> bool:
    name: str = declaration.name
    return declaration.lower_name in _BACKGROUND_PROPERTIES or name.startswith("--")


def _value_urls(tokens: Iterable[tinycss2.ast.Node]) -> list[str]:
    """The links of a CSS value: its url()s, and the strings of an image-set(), at any
    depth (walked without recursion: nesting is the page's to choose)."""
    urls: list[str] = []
    stack: list[tuple[Iterator[tinycss2.ast.Node], bool]] = [(iter(tokens), False)]
    while stack:
        items, strings_are_urls = stack[-1]
        token = next(items, None)
        if token is None:
            stack.pop()
        elif token.type == "url" or (token.type == "string" and strings_are_urls):
            urls.append(token.value)
        elif token.type == "function" and token.lower_name == "url":
            # url("…") with quotes: a function whose argument is a string.
            strings = [arg for arg in token.arguments if arg.type != "whitespace"]
            urls.extend(arg.value for arg in strings[:1] if arg.type == "string")
        elif token.type == "function":
            stack.append((iter(token.arguments), token.lower_name in _IMAGE_SETS))
        elif token.type in ("() block", "[] block", "{} block"):
            stack.append((iter(token.content), False))
    # An escape may name a surrogate, which URLs (and browsers) take as U+FFFD.
    return [_SURROGATES.sub("\ufffd", url) for url in urls]


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


_INLINE_PREFIX = "data:image/"
# A picture carried in the page is recorded (and shown again) under the page's URL with
# this fragment and its SHA-256: never under its data: URL, which holds its bytes.
INLINE_FRAGMENT = "#hotline-inline-sha256="


def _is_inline_picture(value: str) -> bool:
    return value.lstrip(_HTML_SPACE)[: len(_INLINE_PREFIX)].lower() == _INLINE_PREFIX


# A data: URL's header (its type and parameters) longer than this is no picture's.
_INLINE_HEADER = 1024


def is_inline(url: str) -> bool:
    """Whether ``url`` is a ``data:`` URL (any case, as browsers take the scheme)."""
    return url[:5].lower() == "data:"


def inline_picture(url: str, *, max_bytes: int) -> bytes | None:
    """The bytes of a ``data:image/…`` URL, or None if it is none, is malformed, or holds
    more than ``max_bytes``.

    Read as the Fetch Standard's data: URL processor does: the header up to the first
    comma (type, parameters, ``;base64`` last), the rest percent-decoded, then base64
    decoded if so marked (ASCII whitespace ignored). Written here on the standard
    library because w3lib's ``parse_data_uri`` copied the rest of the URL once per
    parameter (30 s for 3 MB of ``;a=b``) and took 90 bytes of memory a character of
    text; this costs one pass and one copy."""
    if not is_inline(url) or len(url) > 2 * max_bytes + _INLINE_HEADER:
        return None
    comma = url.find(",", 5, _INLINE_HEADER)
    if comma < 0:
        return None
    header = url[5:comma].strip(_HTML_SPACE).lower()
    kind, _, parameters = header.partition(";")
    if not kind.strip().startswith("image/"):
        return None
    body = urllib.parse.unquote_to_bytes(url[comma + 1 :])
    if parameters.replace(" ", "").endswith("base64"):
        body = body.translate(None, b" \t\n\f\r")
        body += b"=" * (-len(body) % 4)  # forgiving: padding may be left out
        try:
            body = base64.b64decode(body, validate=False)
        except binascii.Error:  # a length no padding makes whole
            return None
    return body if 0 < len(body) <= max_bytes else None


def inline_url(page_url: str, sha256: str) -> str:
    """Where a picture carried in the page is said to be: the page, and which one."""
    return page_url.split("#", 1)[0] + INLINE_FRAGMENT + sha256


def inline_sha256(url: str) -> str | None:
    """The SHA-256 an :func:`inline_url` names, else None."""
    _, found, digest = url.partition(INLINE_FRAGMENT)
    return digest if found and len(digest) == 64 else None


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


def _encode_query(value: str, codec: str) -> str:
    """``value`` with the non-ASCII characters of its query percent-encoded in the page's
    encoding, as browsers request them (URL parsing alone would use UTF-8); characters
    the encoding lacks become ``&#N;`` first, as in browsers."""
    mark = value.find("?")
    if mark < 0 or codec == "utf-8" or value.isascii():
        return value
    end = value.find("#", mark)
    end = len(value) if end < 0 else end
    query = "".join(
        char
        if char.isascii()
        else urllib.parse.quote(char.encode(codec, "xmlcharrefreplace"), safe="")
        for char in value[mark + 1 : end]
    )
    return f"{value[: mark + 1]}{query}{value[end:]}"


def _decode(data: bytes, content_type: str | None = None) -> tuple[str | None, str]:
    """Bytes to text as a browser decodes a page: its byte order mark, else the charset
    of the Content-Type header, else of a ``<meta>`` within the first bytes, else UTF-8.

    Labels are the web's (the WHATWG Encoding Standard's, by ``webencodings``), not
    Python's: ``<meta charset="cp500">`` is no label there and is ignored, as browsers
    ignore it. Returns the text (None for the "replacement" encoding: the page shows
    nothing) and the Python codec used (the encoding of its links' queries).
    """
    for bom, name in _BOMS:
        if data.startswith(bom):
            # A query of a UTF-16 page is requested in UTF-8.
            return data[len(bom) :].decode(name, "replace"), "utf-8"
    encoding = _label(_header_charset(content_type)) or _prescan(data[:_PRESCAN_BYTES])
    if encoding is None:
        return data.decode("utf-8", "replace"), "utf-8"
    if encoding.name == "replacement":
        return None, "utf-8"
    # x-user-defined is read as windows-1252 (Python has no codec of that name).
    codec = "cp1252" if encoding.name == "x-user-defined" else encoding.codec_info.name
    # A UTF-16 page (a header's, without a BOM) requests its queries in UTF-8.
    query = "utf-8" if encoding.name.startswith("utf-16") else codec
    return data.decode(codec, "replace"), query


def _label(label: str | None) -> webencodings.Encoding | None:
    return webencodings.lookup(label) if label else None


def _header_charset(content_type: str | None) -> str | None:
    if not content_type:
        return None
    message = Message()
    message["content-type"] = content_type
    charset = message.get_param("charset")
    return charset if isinstance(charset, str) else None


class _MetaCharset:
    """An lxml parser target: the encoding the first usable ``<meta>`` declares."""

    def __init__(self) -> None:
        self.encoding: webencodings.Encoding | None = None

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if tag != "meta" or self.encoding is not None:
            return
        label = attrib.get("charset")
        if label is None and attrib.get("http-equiv", "").strip().lower() == "content-type":
            label = _header_charset(attrib.get("content"))
        encoding = _label(label)
        if encoding is not None:
            if encoding.name in ("utf-16be", "utf-16le"):
                # Readable as ASCII to be found: the page is not UTF-16.
                encoding = webencodings.lookup("utf-8")
            self.encoding = encoding

    def close(self) -> None:
        return None


def _prescan(head: bytes) -> webencodings.Encoding | None:
    """The encoding a ``<meta>`` among the first bytes declares (comments and other
    markup skipped by the tokenizer), or None."""
    target = _MetaCharset()
    _parse(head.decode("latin-1"), target)
    return target.encoding
