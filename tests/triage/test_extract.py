"""Media links of a page: every kind of link, resolution, charset, limit, garbage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fixtures.images import new_marker
from triage.extract import inline_picture, inline_sha256, inline_url, media_links

# The marker (a comment) is there for the content audit: nothing of a page may be kept.
PAGE = f"""<!doctype html>
<html><head>
<meta charset="utf-8">
<meta property="og:image" content="/og.jpg#social">
<meta property="og:image:secure_url" content="https://cdn.example.net/og-secure.jpg">
<meta name="twitter:image" content="tw.png">
<meta name="twitter:image:src" content="tw-src.png">
<meta property="og:title" content="not an image.jpg">
<meta name="description" content="/not-media.jpg">
<base href="https://media.example.org/gallery/">
</head><body>
<!-- {new_marker().decode()} -->
<img src="one.jpg">
<img src="two.jpg" srcset="two-1x.jpg 1x, two-2x.jpg 2x,two-3x.jpg   3x">
<img srcset="w400.jpg 400w, w800.jpg 800w" sizes="(max-width: 600px) 400px, 800px">
<img srcset="comma,name.jpg 1x, /abs/img.webp">
<img src="//proto.example.com/rel.gif">
<img src="data:image/png;base64,iVBORw0KGgo=">
<img src="javascript:alert(1)">
<img src="">
<img data-src="lazy.jpg">
<img src="one.jpg#again">
<picture>
  <source srcset="pic.avif 1x, pic-2x.avif 2x" type="image/avif">
  <source srcset="pic.webp" type="image/webp">
  <img src="pic.jpg">
</picture>
<video src="clip.mp4" poster="poster.jpg">
  <source src="clip.webm" type="video/webm">
</video>
<audio src="sound.mp3"><source src="sound.ogg"></audio>
<a href="/photos/full.JPEG">full</a>
<a href="movie.mkv?dl=1">movie</a>
<a href="page.html">a page</a>
<a href="ftp://files.example.com/x.jpg">ftp</a>
<a href="mailto:someone@example.com">mail</a>
<a href="https://other.example.com/">other site</a>
<a href="/photos/full.JPEG">full again</a>
</body></html>
"""

EXPECTED = [
    "https://media.example.org/og.jpg",
    "https://cdn.example.net/og-secure.jpg",
    "https://media.example.org/gallery/tw.png",
    "https://media.example.org/gallery/tw-src.png",
    "https://media.example.org/gallery/one.jpg",
    "https://media.example.org/gallery/two.jpg",
    "https://media.example.org/gallery/two-1x.jpg",
    "https://media.example.org/gallery/two-2x.jpg",
    "https://media.example.org/gallery/two-3x.jpg",
    "https://media.example.org/gallery/w400.jpg",
    "https://media.example.org/gallery/w800.jpg",
    "https://media.example.org/gallery/comma,name.jpg",
    "https://media.example.org/abs/img.webp",
    "https://proto.example.com/rel.gif",
    "https://media.example.org/gallery/lazy.jpg",
    "https://media.example.org/gallery/pic.avif",
    "https://media.example.org/gallery/pic-2x.avif",
    "https://media.example.org/gallery/pic.webp",
    "https://media.example.org/gallery/pic.jpg",
    "https://media.example.org/gallery/clip.mp4",
    "https://media.example.org/gallery/poster.jpg",
    "https://media.example.org/gallery/clip.webm",
    "https://media.example.org/photos/full.JPEG",
    "https://media.example.org/gallery/movie.mkv?dl=1",
]


def test_every_kind_of_media_link_in_document_order() -> None:
    assert media_links(PAGE, "http://page.example.com/dir/index.html", limit=100) == EXPECTED


def test_links_to_every_file_type_hashing_knows_are_followed() -> None:
    names = ["a.mpg", "b.MPEG", "c.wmv", "d.flv", "e.3gp", "f.ts", "g.jfif", "h.jpe", "i.svg"]
    page = "".join(f'<a href="{name}">x</a>' for name in (*names, "j.html", "k.zip", "l.txt"))
    found = media_links(page, "https://example.com/dir/", limit=50)
    assert found == [f"https://example.com/dir/{name}" for name in names]


def test_bytes_give_the_same_links() -> None:
    links = media_links(PAGE.encode(), "http://page.example.com/dir/index.html", limit=100)
    assert links == EXPECTED


def test_limit_keeps_the_first_links() -> None:
    assert media_links(PAGE, "http://page.example.com/", limit=3) == EXPECTED[:3]
    assert media_links(PAGE, "http://page.example.com/", limit=0) == []


def test_relative_links_resolve_against_the_page_without_base() -> None:
    html = '<img src="a.png"><img src="../b.png"><img src="/c.png"><img src="?q=1">'
    assert media_links(html, "https://example.com/x/y/page?old=1#top", limit=10) == [
        "https://example.com/x/y/a.png",
        "https://example.com/x/b.png",
        "https://example.com/c.png",
        "https://example.com/x/y/page?q=1",
    ]


def test_a_relative_base_resolves_against_the_page() -> None:
    html = '<base href="/media/"><img src="a.png">'
    assert media_links(html, "http://example.com/x/page", limit=10) == [
        "http://example.com/media/a.png"
    ]


def test_only_the_first_base_counts_and_a_broken_base_is_ignored() -> None:
    html = '<base href="http://[::1"><base href="/second/"><img src="a.png">'
    assert media_links(html, "http://example.com/x/page", limit=10) == [
        "http://example.com/x/a.png"
    ]


def test_srcset_with_urls_containing_commas_and_descriptors_with_parentheses() -> None:
    html = '<img srcset="a.jpg?w=1,2 1x (foo, bar), b.jpg 2x,c.jpg,, d.jpg, e.jpg,,f.jpg">'
    assert media_links(html, "http://example.com/", limit=10) == [
        "http://example.com/a.jpg?w=1,2",
        "http://example.com/b.jpg",
        "http://example.com/c.jpg",
        "http://example.com/d.jpg",
        "http://example.com/e.jpg,,f.jpg",  # no space after the commas: one URL (HTML)
    ]


def test_urls_are_parsed_as_browsers_parse_them() -> None:
    html = (
        '<img src="  HTTP://Example.COM:80/a b.jpg  ">'
        '<img src="http:\\\\example.com\\b.jpg">'
        '<img src="http://user:pw@example.com/c.jpg">'
        '<img src="http://[::1">'
    )
    assert media_links(html, "http://example.com/", limit=10) == [
        "http://example.com/a%20b.jpg",
        "http://example.com/b.jpg",
        "http://user:pw@example.com/c.jpg",
    ]


def test_non_web_schemes_are_dropped() -> None:
    html = (
        '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">'
        '<img src="blob:http://example.com/1">'
        '<img src="file:///etc/passwd">'
        '<a href="ftp://example.com/x.jpg">x</a>'
        '<img src="JavaScript:void(0)">'
    )
    assert media_links(html, "http://example.com/", limit=10) == []


def test_meta_charset_decodes_the_page() -> None:
    html = '<meta charset="windows-1251"><img src="/фото.jpg">'.encode("cp1251")
    assert media_links(html, "http://example.com/", limit=10) == [
        "http://example.com/%D1%84%D0%BE%D1%82%D0%BE.jpg"
    ]


def test_http_equiv_charset_and_latin1_labels() -> None:
    html = (
        '<meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-1">'
        '<img src="/caf\xe9.jpg">'
    ).encode("latin-1")
    assert media_links(html, "http://example.com/", limit=10) == [
        "http://example.com/caf%C3%A9.jpg"
    ]


@pytest.mark.parametrize("label", ["rot13", "base64", "idna", "no-such-charset", "utf-16"])
def test_odd_charset_labels_fall_back_to_utf8(label: str) -> None:
    html = f'<meta charset="{label}"><img src="/é.jpg">'.encode()
    assert media_links(html, "http://example.com/", limit=10) == ["http://example.com/%C3%A9.jpg"]


def test_a_utf16_page_with_a_bom() -> None:
    html = '<img src="/a.jpg">'.encode("utf-16")
    assert media_links(html, "http://example.com/", limit=10) == ["http://example.com/a.jpg"]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    html = b'<img src="/a\xff\xfe.jpg"><img src="/b.jpg">'
    assert media_links(html, "http://example.com/", limit=10) == [
        "http://example.com/a%EF%BF%BD%EF%BF%BD.jpg",
        "http://example.com/b.jpg",
    ]


@pytest.mark.parametrize(
    "html",
    [
        b"",
        b"\x00\x00\x00",
        b"<<<<>>>>",
        b"<img src=",
        b"<img src='unterminated",
        b"<img srcset=',,,,   ,'>",
        b"<a href>",
        b"<meta property=og:image>",
        b"<video><source></video>",
        b"\xff" * 1000,
        "<img src='\ud800.jpg'>",
        "<base href='javascript:alert(1)'><img src='a.jpg'>",
        b"<svg><img src='/in-svg.jpg'></svg>" * 3,
        b"<table>" * 2000 + b"<img src='/deep.jpg'>",
        b"<div style='background:url(\\D800\\110000.jpg)'>",
        b"<div style='background:url(/a.jpg) 1" + b"1" * 5000 + b".5e1" + b"1" * 5000 + b"'>",
        b"<div style='background:image-set(url(/a.jpg)' data-bg='url(' data-bgset='|,|'>",
        b"<div style='}}}{{{;;;:::!!!'>",
    ],
)
def test_garbage_never_raises(html: bytes | str) -> None:
    links = media_links(html, "http://example.com/", limit=10)
    assert isinstance(links, list)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "markup",
    [
        # 200,000 unclosed <div>: an HTML5 tree builder (lexbor) took 54 s for 160,000.
        "<div>" * 200_000,
        # Misnested formatting elements, lexbor issue 340: 82 kB took 23 s and 5 GB; this
        # one (240 kB) would take minutes and more memory than the machine has.
        "".join(f"<b {i}>" for i in range(12_000))
        + "".join(f"<i {i}>" for i in range(12_000))
        + "x</b>" * 12_000,
        "<select>" + "<option>a" * 100_000,
        "<table><tr><td>" * 50_000,
    ],
    ids=["unclosed-divs", "misnested-formatting", "options", "nested-tables"],
)
def test_hostile_markup_is_read_in_linear_time_and_its_media_found(markup: str) -> None:
    html = f'<img src="/first.jpg">{markup}<img src="/last.jpg">'
    assert media_links(html, "http://example.com/", limit=10) == [
        "http://example.com/first.jpg",
        "http://example.com/last.jpg",
    ]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "style",
    [
        "(" * 1_000_000,  # as many nested blocks: tinycss2's slowest, 2.5 s a megabyte
        "{[" * 500_000,
        "background:url(/x.jpg);" * 45_000,
        "1" * 1_000_000,  # a number Python would refuse to convert
        "background:url(" + "a" * 1_000_000,
        "a:url(" * 170_000,
        "\\" * 1_000_000,
        "/*" * 500_000,
    ],
    ids=["parentheses", "blocks", "declarations", "digits", "url", "urls", "escapes", "comments"],
)
def test_a_hostile_style_attribute_is_read_in_linear_time(style: str) -> None:
    # Within the page's CSS budget (500,000 characters), so that it is read.
    style = f"background: url(/inside.jpg); {style}"[:490_000]
    html = (
        '<img src="/first.jpg"><div style="background: url(/before.jpg)"></div>'
        f'<div style="{style}"></div><img src="/last.jpg">'
    )
    links = media_links(html, "http://example.com/", limit=10)
    assert links[:3] == [
        "http://example.com/first.jpg",
        "http://example.com/before.jpg",
        "http://example.com/inside.jpg",
    ]
    assert links[-1] == "http://example.com/last.jpg"


def test_css_past_the_budget_is_skipped_the_rest_still_read() -> None:
    # A style attribute larger than what is left of the page's CSS budget is skipped,
    # and costs none of it: the ones after it are read.
    huge = "background: url(/huge.jpg);" + " " * 2_000_000
    html = f'<div style="{huge}"></div><div style="background: url(/after.jpg)"></div>'
    assert media_links(html, "http://example.com/", limit=10) == ["http://example.com/after.jpg"]


@pytest.mark.parametrize(
    "head",
    [
        '<meta charset="cp037">',  # EBCDIC: Python knows the label, the web does not
        '<meta charset="cp500">',
        '<meta charset="ebcdic-cp-us">',
        '<meta charset="utf-7">',
        '<meta charset="punycode">',
        '<!-- <meta charset="cp037"> -->',  # a comment is not markup
        '<meta name="description" content="charset=cp500">',  # nor is another meta's text
        '<meta http-equiv="refresh" content="5; charset=cp500">',
    ],
)
def test_charset_labels_browsers_ignore_are_ignored(head: str) -> None:
    html = f'{head}<img src="/a+b.jpg"><img src="/b.jpg">'.encode()
    assert media_links(html, "http://example.com/", limit=10) == [
        "http://example.com/a+b.jpg",
        "http://example.com/b.jpg",
    ]


def test_the_charset_of_the_content_type_header_decodes_the_page() -> None:
    html = '<img src="/фото.jpg"><img src="/img.php?name=фото">'.encode("cp1251")
    links = media_links(
        html, "http://example.com/", limit=10, content_type='text/html; charset="windows-1251"'
    )
    assert links == [
        "http://example.com/%D1%84%D0%BE%D1%82%D0%BE.jpg",
        # The query in the page's own encoding, as a browser requests it.
        "http://example.com/img.php?name=%F4%EE%F2%EE",
    ]
    # The header wins over a <meta>; a byte order mark over both.
    meta = b'<meta charset="iso-8859-5">' + html
    assert (
        media_links(meta, "http://example.com/", limit=10, content_type="text/html; charset=cp1251")
        == links
    )
    bom = "\ufeff<img src='/é.jpg'>".encode()
    assert media_links(
        bom, "http://example.com/", limit=10, content_type="text/html; charset=koi8-r"
    ) == ["http://example.com/%C3%A9.jpg"]


def test_a_page_in_the_replacement_encoding_shows_nothing() -> None:
    html = b'<meta charset="iso-2022-kr"><img src="/a.jpg">'
    assert media_links(html, "http://example.com/", limit=10) == []


@pytest.mark.parametrize(
    "bases",
    [
        '<base href="data:,">',
        '<base href="javascript:0">',
        '<base href><base href="https://decoy.example/">',  # the first <base href> counts
        '<base href=""><base href="https://decoy.example/">',
    ],
)
def test_a_base_browsers_do_not_use_leaves_the_page_url(bases: str) -> None:
    html = f'{bases}<img src="a.jpg"><img src="/b.jpg">'
    assert media_links(html, "https://site.example/gallery/", limit=10) == [
        "https://site.example/gallery/a.jpg",
        "https://site.example/b.jpg",
    ]


def test_past_the_limit_every_picture_comes_before_its_other_sizes() -> None:
    def sizes(n: int) -> str:
        return ", ".join(f"/p{n}-{w}.jpg {w}w" for w in (320, 640, 1024, 2048))

    gallery = "".join(f'<img src="/p{n}.jpg" srcset="{sizes(n)}">' for n in range(20))
    links = media_links(gallery, "http://example.com/", limit=50)
    assert len(links) == 50
    assert {f"http://example.com/p{n}.jpg" for n in range(20)} <= set(links)
    # Still in document order.
    assert links[:2] == ["http://example.com/p0.jpg", "http://example.com/p0-320.jpg"]
    pictures = "".join(
        f'<picture><source srcset="/q{n}.avif" type="image/avif">'
        f'<source srcset="/q{n}.webp" type="image/webp"><img src="/q{n}.jpg"></picture>'
        for n in range(20)
    )
    links = media_links(pictures, "http://example.com/", limit=30)
    assert {f"http://example.com/q{n}.jpg" for n in range(20)} <= set(links)
    lazy = "".join(f'<img srcset="/r{n}-1x.jpg 1x, /r{n}-2x.jpg 2x">' for n in range(10))
    links = media_links(lazy, "http://example.com/", limit=10)
    assert links == [f"http://example.com/r{n}-1x.jpg" for n in range(10)]


def test_a_video_s_first_source_is_its_main_link() -> None:
    html = "".join(
        f'<video poster="/v{n}.jpg"><source src="/v{n}.webm"><source src="/v{n}.mp4"></video>'
        for n in range(5)
    )
    links = media_links(html, "http://example.com/", limit=10)
    assert links == [
        link
        for n in range(5)
        for link in (f"http://example.com/v{n}.jpg", f"http://example.com/v{n}.webm")
    ]


def test_links_to_the_page_itself_are_left_out() -> None:
    html = '<img src="#"><img src="page.html"><img src="?"><a href="#top">x</a><img src="a.jpg">'
    assert media_links(html, "http://example.com/page.html", limit=10) == [
        "http://example.com/page.html?",
        "http://example.com/a.jpg",
    ]


def test_image_elements_inline_svg_and_svg_documents() -> None:
    html = (
        '<image src="/as-img.png">'  # an <image> is an <img> to browsers
        '<svg><image href="/in-svg.jpg"/><image xlink:href="/xlink.jpg"/>'
        '<a href="/svg-link.jpg">x</a></svg>'
        "<template><img src=/template.jpg></template>"
    )
    assert media_links(html, "http://example.com/", limit=10) == [
        "http://example.com/as-img.png",
        "http://example.com/in-svg.jpg",
        "http://example.com/xlink.jpg",
        "http://example.com/svg-link.jpg",
        "http://example.com/template.jpg",
    ]
    # An SVG file: what it shows, not where its hyperlinks lead.
    assert media_links(html, "http://example.com/", limit=10, svg_document=True) == [
        "http://example.com/as-img.png",
        "http://example.com/in-svg.jpg",
        "http://example.com/xlink.jpg",
        "http://example.com/template.jpg",
    ]


def test_an_invalid_page_url_keeps_absolute_links_only() -> None:
    html = '<img src="rel.jpg"><img src="https://example.com/abs.jpg">'
    assert media_links(html, "not a url", limit=10) == ["https://example.com/abs.jpg"]


@settings(max_examples=200, deadline=None)
@given(
    html=st.one_of(st.binary(max_size=2000), st.text(max_size=2000)),
    base=st.sampled_from(["http://example.com/a/", "https://x.example.org", "garbage", ""]),
    limit=st.integers(-1, 20),
)
def test_any_input_gives_unique_web_links_within_the_limit(
    html: bytes | str, base: str, limit: int
) -> None:
    links = media_links(html, base, limit=limit)
    assert len(links) <= max(limit, 0)
    assert len(set(links)) == len(links)
    assert all(link.startswith(("http://", "https://")) and "#" not in link for link in links)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                '<img src="{}">',
                '<img srcset="{} 1x">',
                '<a href="{}">x</a>',
                '<video src="{}">',
                '<div style="background: url({})">',
                '<div data-bg="{}">',
                "<div style=\"background-image: image-set('{}' 1x)\">",
            ]
        ).flatmap(
            lambda template: st.from_regex(r"[a-z0-9/._#,?=-]{0,20}", fullmatch=True).map(
                template.format
            )
        ),
        max_size=30,
    )
)
def test_generated_pages_keep_the_invariants(fragments: list[str]) -> None:
    links = media_links("".join(fragments), "http://example.com/base/", limit=50)
    assert len(set(links)) == len(links)
    assert all(link.startswith("http://") and "#" not in link for link in links)


def test_the_pictures_lazy_loaders_keep_for_their_scripts() -> None:
    html = (
        '<img src="/blank.gif" data-lazy-src="/rocket.jpg" data-lazy-srcset="/rocket-2x.jpg 2x">'
        '<img data-original="/tuupola.jpg">'
        '<img data-original-src="/fork.jpg">'
        '<img data-lazy-original="/rocket-1.jpg">'
        '<img data-lazy="/slick.jpg">'
        '<picture><source data-lazy-srcset="/pic.webp" type="image/webp"><img data-src="/pic.jpg">'
        "</picture>"
        '<video data-poster="/poster.jpg" poster="/poster-placeholder.gif" data-src="/v.mp4">'
        '<source data-src="/v.webm"></video>'
    )
    assert media_links(html, "http://example.com/", limit=50) == [
        "http://example.com/rocket.jpg",
        "http://example.com/rocket-2x.jpg",
        "http://example.com/blank.gif",
        "http://example.com/tuupola.jpg",
        "http://example.com/fork.jpg",
        "http://example.com/rocket-1.jpg",
        "http://example.com/slick.jpg",
        "http://example.com/pic.webp",
        "http://example.com/pic.jpg",
        "http://example.com/v.mp4",
        "http://example.com/poster.jpg",
        "http://example.com/poster-placeholder.gif",
        "http://example.com/v.webm",
    ]


def test_flags_in_lazy_attributes_are_not_links() -> None:
    html = (
        '<img src="/real.jpg" data-lazy="true" data-src="1">'
        '<div data-bg="yes" data-background="lazy" style="background: url(/bg.jpg)"></div>'
    )
    assert media_links(html, "http://example.com/", limit=50) == [
        "http://example.com/real.jpg",
        "http://example.com/bg.jpg",
    ]


def test_placeholders_do_not_push_lazy_pictures_past_the_limit() -> None:
    # One spinner on every <img>: the 60 pictures fill the limit, not the spinner.
    same = "".join(f'<img src="/spinner.gif" data-src="/p{n}.jpg">' for n in range(60))
    links = media_links(same, "http://example.com/", limit=50)
    assert links == [f"http://example.com/p{n}.jpg" for n in range(50)]
    # A blurred preview of each (LQIP): every picture before any preview.
    previews = "".join(f'<img src="/tiny/{n}.jpg" data-src="/q{n}.jpg">' for n in range(30))
    links = media_links(previews, "http://example.com/", limit=50)
    assert {f"http://example.com/q{n}.jpg" for n in range(30)} <= set(links)
    assert len(links) == 50
    # A data: placeholder is no link: the first lazy srcset candidate is the main one.
    sets = "".join(
        f'<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" '
        f'data-srcset="/r{n}-1x.jpg 1x, /r{n}-2x.jpg 2x">'
        for n in range(10)
    )
    links = media_links(sets, "http://example.com/", limit=10)
    assert links == [f"http://example.com/r{n}-1x.jpg" for n in range(10)]


def test_image_buttons_embeds_and_objects_that_show_media() -> None:
    html = (
        '<input type="IMAGE" src="/button.png">'
        '<input type="text" src="/not-a-button.png">'
        '<embed src="/clip.mp4">'
        '<embed src="/player.swf">'
        '<embed src="/stream?id=1" type="video/mp4">'
        '<embed src="/frame.html" type="text/html">'
        '<object data="/still.jpg"></object>'
        '<object data="/show?id=2" type=" Image/PNG "></object>'
        '<object data="/doc.pdf" type="application/pdf"></object>'
        '<object data="/movie.swf" type="application/x-shockwave-flash">'
        '<embed src="/fallback.gif"></object>'
    )
    assert media_links(html, "http://example.com/", limit=50) == [
        "http://example.com/button.png",
        "http://example.com/clip.mp4",
        "http://example.com/stream?id=1",
        "http://example.com/still.jpg",
        "http://example.com/show?id=2",
        "http://example.com/fallback.gif",
    ]


def test_backgrounds_of_style_attributes() -> None:
    html = (
        '<base href="/media/">'
        "<div style=\"color: red; background: #fff url( 'a.jpg' ) no-repeat\"></div>"
        '<div style="background-image: url(b.jpg), url(&quot;c.jpg&quot;)"></div>'
        "<div style=\"BACKGROUND-IMAGE: image-set('d.avif' type('image/avif'), url(d.jpg) 1x)"
        ' !important"></div>'
        '<div style="background: linear-gradient(red, blue), url(/e\\29 .jpg)"></div>'
        '<div style="--hero: url(hero.jpg); mask-image: url(mask.png); content: url(c.png)">'
        "</div>"
        '<div style="/* background: url(comment.jpg) */ background: url(data:image/png,x)">'
        "</div>"
        "<span style=\"background:url('javascript:alert(1)')\"></span>"
        '<div style="background: url(\'unterminated.jpg"></div>'
    )
    assert media_links(html, "http://example.com/page", limit=50) == [
        "http://example.com/media/a.jpg",
        "http://example.com/media/b.jpg",
        "http://example.com/media/c.jpg",
        "http://example.com/media/d.avif",
        "http://example.com/media/d.jpg",
        "http://example.com/e).jpg",
        "http://example.com/media/hero.jpg",
        "http://example.com/media/c.png",  # content: shown in place of the element
        "http://example.com/media/unterminated.jpg",
    ]


def test_backgrounds_lazy_loaders_keep_for_their_scripts() -> None:
    html = (
        '<div data-bg="/unveil.jpg"></div>'
        '<div data-bg="url(/css.jpg)"></div>'
        '<section data-background="/swiper.jpg"></section>'
        '<div data-background-image="/lozad-1.jpg,/lozad-2.jpg"></div>'
        "<div data-bg-multi=\"url(/multi-1.jpg), url('/multi-2.jpg')\"></div>"
        '<div data-bg-set="url(/set-1x.jpg) 1x, url(/set-2x.jpg) 2x | url(/set-b.jpg) 1x"></div>'
        '<div data-bgset="/bg-200.jpg 200w, /bg-400.jpg 400w [(max-width: 30em)] | /bg-b.jpg">'
        "</div>"
        '<div data-bg="/plain.jpg" data-bg-hidpi="/plain@2x.jpg"></div>'
    )
    assert media_links(html, "http://example.com/", limit=50) == [
        f"http://example.com/{name}"
        for name in (
            "unveil.jpg",
            "css.jpg",
            "swiper.jpg",
            "lozad-1.jpg",
            "lozad-2.jpg",
            "multi-1.jpg",
            "multi-2.jpg",
            "set-1x.jpg",
            "set-2x.jpg",
            "set-b.jpg",
            "bg-200.jpg",
            "bg-400.jpg",
            "bg-b.jpg",
            "plain.jpg",
            "plain@2x.jpg",
        )
    ]


def test_a_background_is_its_element_s_picture() -> None:
    # The lazy background before the placeholder of the style attribute; the backdrop
    # of an img (a blurred preview) an alternative of its picture.
    html = "".join(
        f'<div style="background-image: url(/blur.gif)" data-bg="/b{n}.jpg"></div>'
        f'<img src="/i{n}.jpg" style="background-image: url(/i{n}-tiny.jpg)">'
        for n in range(30)
    )
    links = media_links(html, "http://example.com/", limit=50)
    assert {f"http://example.com/b{n}.jpg" for n in range(25)} <= set(links)
    assert {f"http://example.com/i{n}.jpg" for n in range(25)} <= set(links)
    assert len(links) == 50
    # A link of another kind that is not media leaves the background the main link.
    html = '<a href="/next.html" style="background: url(/tile.jpg)">next</a>'
    assert media_links(html, "http://example.com/", limit=1) == ["http://example.com/tile.jpg"]


@settings(max_examples=300, deadline=None)
@given(
    css=st.text(
        st.one_of(
            st.sampled_from(list("()[]{}'\";:,!\\/*@#%-+.0123456789eE uU\n")), st.characters()
        ),
        max_size=200,
    )
)
def test_any_css_gives_web_links(css: str) -> None:
    html = (
        f"<div style='background: url(/a.jpg) {css}'></div><div style='--x: {css}'></div>"
        f"<div data-bg='url({css})' data-bg-multi='{css}'></div>"
        f"<style>.a {{ background: url(/b.jpg) {css} }}</style><style>{css}</style>"
    )
    links = media_links(html, "http://example.com/", limit=50)
    assert len(set(links)) == len(links)
    assert all(link.startswith("http://") and "#" not in link for link in links)


def test_backgrounds_of_style_elements() -> None:
    html = (
        '<base href="https://cdn.example.org/theme/">'
        "<style>\n"
        "@import url(print.css);\n"
        "@font-face { font-family: x; src: url(font.woff2) }\n"
        ".hero { color: red; background: url('hero.jpg') center / cover }\n"
        "/* .old { background: url(commented.jpg) } */\n"
        "@media (min-width: 40em) { .hero { background-image: image-set('hero-2x.avif' 2x) } }\n"
        '.card { .photo { background-image: url("/nested.jpg") } }\n'
        ":root { --banner: url(banner.webp) }\n"
        ".icon { mask-image: url(icon.svg) }\n"
        "</style>"
        '<img src="/photo.jpg">'
        "<style>.late { background: url(late.png) }</style>"
        "<svg><style>.s { background: url(in-svg.png) }</style></svg>"
    )
    assert media_links(html, "http://example.com/", limit=50) == [
        "https://cdn.example.org/theme/hero.jpg",
        "https://cdn.example.org/theme/hero-2x.avif",
        "https://cdn.example.org/nested.jpg",
        "https://cdn.example.org/theme/banner.webp",
        "https://cdn.example.org/photo.jpg",
        "https://cdn.example.org/theme/late.png",
        "https://cdn.example.org/theme/in-svg.png",
    ]
    # A rule's selector may match nothing (or an icon): past the limit the pictures of
    # the page's elements come first.
    assert media_links(html, "http://example.com/", limit=1) == [
        "https://cdn.example.org/photo.jpg"
    ]


@pytest.mark.timeout(60)
def test_a_hostile_style_element_is_read_in_linear_time() -> None:
    # Nested blocks, tinycss2's slowest, within the page's budget for <style> (500,000
    # characters); a larger one after it is skipped, and the page still read.
    nested = ("a{b:c(" * 82_000)[:490_000]
    html = (
        "<style>.a { background: url(/before.jpg) }</style>"
        f"<style>{nested}</style>"
        f"<style>.b {{ background: url(/skipped.jpg) }}{' ' * 100_000}</style>"
        '<style>.c { background: url(/after.jpg) }</style><img src="/last.jpg">'
    )
    assert media_links(html, "http://example.com/", limit=10) == [
        "http://example.com/before.jpg",
        "http://example.com/after.jpg",
        "http://example.com/last.jpg",
    ]


# -- Pictures carried in the page


def test_pictures_carried_in_the_page_are_kept_only_when_asked_for() -> None:
    jpeg = "data:image/jpeg;base64,/9j/4AAQ"
    html = (
        f'<img src="{jpeg}"><img src=" {jpeg} "><img src="DATA:image/png,%89PNG">'
        '<img src="data:text/html,<b>x</b>"><img src="/a.jpg">'
        '<div style="background: url(data:image/gif;base64,R0lGOD)"></div>'
    )
    assert media_links(html, "http://example.com/", limit=10) == ["http://example.com/a.jpg"]
    assert media_links(html, "http://example.com/", limit=10, inline=True) == [
        jpeg,
        "DATA:image/png,%89PNG",
        "http://example.com/a.jpg",
        "data:image/gif;base64,R0lGOD",
    ]


def test_a_carried_picture_is_decoded_from_its_data_url() -> None:
    assert inline_picture("data:image/png;base64,iVBO RW0K\n", max_bytes=100) == (b"\x89PNEm\n")
    assert inline_picture("data:image/svg+xml,%3Csvg%3E", max_bytes=100) == b"<svg>"
    assert inline_picture("DATA:IMAGE/PNG;BASE64,iVBORw0K", max_bytes=100) == b"\x89PNG\r\n"
    assert inline_picture("data:image/png;base64,iVB", max_bytes=100) == b"\x89P"  # unpadded
    assert inline_picture("data:image/png;base64,iVBOR", max_bytes=100) is None
    assert inline_picture("data:text/plain,words", max_bytes=100) is None
    assert inline_picture("data:image/png;base64", max_bytes=100) is None  # no comma
    assert inline_picture("data:image/png," + "x" * 101, max_bytes=100) is None
    assert inline_picture("http://example.com/a.png", max_bytes=100) is None
    digest = "ab" * 32
    url = inline_url("http://example.com/page?q=1#top", digest)
    assert url == "http://example.com/page?q=1#hotline-inline-sha256=" + digest
    assert (inline_sha256(url), inline_sha256("http://example.com/a.jpg")) == (digest, None)


@pytest.mark.timeout(60)
def test_a_hostile_data_url_is_read_in_linear_time() -> None:
    """Three megabytes of parameters (w3lib took 30 s: a copy of the rest per parameter)
    and twelve of percent-escapes."""
    assert inline_picture("data:image/png" + ";a=b" * 800_000 + ",x", max_bytes=10**8) is None
    escaped = inline_picture("data:image/jpeg," + "%41" * 4_000_000, max_bytes=10**8)
    assert escaped == b"A" * 4_000_000


# -- Pictures a page names for search engines and browsers' preloading


def test_schema_org_pictures_preloads_and_css_content() -> None:
    """Image hosts, galleries and video sites describe their pictures to search engines
    in JSON-LD and microdata; pages preload their main picture; CSS ``content`` shows a
    picture with no <img> at all. Logos, players' pages and a page's own URL are not
    pictures, nor is JSON that is not JSON-LD."""
    linked = (
        '{"@context": "https://schema.org", "@graph": ['
        ' {"@type": "WebPage", "url": "https://example.com/page", "name": "a.jpg",'
        '  "publisher": {"@type": "Organization", "logo": "/logo.png"}},'
        ' {"@type": "ImageObject", "contentUrl": "/full.jpg", "url": "/full-page",'
        '  "thumbnailUrl": ["/thumb-1.jpg", "/thumb-2.jpg"]},'
        ' {"@type": "VideoObject", "contentUrl": "/clip.mp4", "embedUrl": "/player",'
        '  "thumbnail": {"@type": "ImageObject", "url": "/poster.jpg"}},'
        ' {"@type": "Person", "image": {"url": "/face.webp", "width": 200}}]}'
    )
    html = (
        f'<head><script type="application/ld+json">{linked}</script>'
        '<script type="application/ld+json">{"image": "/broken.jpg"</script>'
        '<script>var config = {"image": "/script.jpg"};</script>'
        '<script type="application/json">{"image": "/other-json.jpg"}</script>'
        '<link rel="preload" as="image" href="/hero.jpg" imagesrcset="/hero-2x.jpg 2x">'
        '<link rel="preload" as="script" href="/app.js">'
        '<link rel="image_src" href="/shared.jpg">'
        '<link rel="stylesheet" href="/site.css"><link rel="icon" href="/favicon.png">'
        '<meta itemprop="name image" content="/micro.jpg">'
        '<meta itemprop="name" content="/not-a-picture.jpg">'
        "<style>.card::before { content: url(/before.jpg) }</style></head>"
        '<body itemscope><link itemprop="contentUrl" href="/micro-video.mp4">'
        '<span style="content: url(&quot;/span.png&quot;)"></span></body>'
    )
    assert media_links(html, "https://example.com/page", limit=50) == [
        "https://example.com/full.jpg",
        "https://example.com/thumb-1.jpg",
        "https://example.com/thumb-2.jpg",
        "https://example.com/clip.mp4",
        "https://example.com/poster.jpg",
        "https://example.com/face.webp",
        "https://example.com/hero.jpg",
        "https://example.com/hero-2x.jpg",
        "https://example.com/shared.jpg",
        "https://example.com/micro.jpg",
        "https://example.com/before.jpg",
        "https://example.com/micro-video.mp4",
        "https://example.com/span.png",
    ]


@pytest.mark.timeout(60)
def test_hostile_json_ld_is_bounded_and_the_page_still_read() -> None:
    """JSON nested deeper than Python reads gives nothing; a script over the page's
    budget (1,000,000 characters) is skipped; at most 1,000 links come from JSON-LD."""
    deep = "[" * 200_000 + "]" * 200_000
    many = '{"image": [' + ",".join(f'"/p{i}.jpg"' for i in range(5_000)) + "]}"
    huge = '{"image": "/huge.jpg", "pad": "' + " " * 1_000_000 + '"}'
    html = (
        f'<script type="application/ld+json">{deep}</script>'
        f'<script type="application/ld+json">{huge}</script>'
        f'<script type="application/ld+json">{many}</script>'
        f'<script type="application/ld+json">{many.replace("/p", "/q")}</script>'
        '<img src="/last.jpg">'
    )
    links = media_links(html, "http://example.com/", limit=5_000)
    assert links[:2] == ["http://example.com/p0.jpg", "http://example.com/p1.jpg"]
    assert len(links) == 1_001
    assert links[-1] == "http://example.com/last.jpg"
    assert "http://example.com/huge.jpg" not in links


def test_json_ld_escapes_of_lone_surrogates_become_replacement_characters() -> None:
    """JSON's \\uD800 names a lone surrogate, which no URL holds: taken as U+FFFD, as a
    CSS escape's is, a picture the page carries is read rather than raising in
    inline_picture (which failed the whole page) and a URL is kept."""
    linked = '{"image": ["data:image/png,a\\ud800", "/b\\udfff.jpg"]}'
    html = f'<script type="application/ld+json">{linked}</script>'
    links = media_links(html, "http://example.com/", limit=10, inline=True)
    assert links == ["data:image/png,a\ufffd", "http://example.com/b%EF%BF%BD.jpg"]
    assert inline_picture(links[0], max_bytes=100) == "a\ufffd".encode()
