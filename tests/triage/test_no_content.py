"""No fetched content is kept, path by path: how bytes of a fetched file (or
server-controlled metadata) could reach a log, an exception text, the database, an HTTP
error body or the disk, and that they do not.

Every file and page served here is generated in code and carries a marker
(tests/fixtures/images.py); the servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import struct
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from hotline.db import session_scope
from hotline.logging import configure_logging
from hotline.models import Role
from reporting.models import Target
from tests.conftest import tables_with_marker
from tests.fixtures import images
from tests.fixtures.audit import exception_texts, has_marker
from tests.fixtures.pipeline import process
from tests.fixtures.servers import LocalHTTPServer, Route
from tests.triage.test_api import bearer
from tests.triage.test_pipeline import LOOPBACK, report
from tests.triage.test_safeview import seen, view
from triage import hashing, safeview
from triage.errors import FetchError
from triage.fetcher import Fetcher, FetchPolicy

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- helpers


class _Records(logging.Handler):
    """Every record reaching the root logger, formatted as a handler would print it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        shown = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            shown += "".join(traceback.format_exception(record.exc_info[1]))
        self.lines.append(f"{record.name}: {shown}")


@pytest.fixture
def debug_logs() -> Iterator[_Records]:
    """The production logging configuration at its most verbose (HOTLINE_LOG_LEVEL=DEBUG),
    with a handler keeping every line it would print."""
    configure_logging("DEBUG")
    handler = _Records()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        configure_logging("INFO")


def target_row(target_id: int) -> Target:
    with session_scope() as session:
        target = session.get(Target, target_id)
        assert target is not None
        session.expunge(target)
        return target


def media_ids(target_id: int) -> list[int]:
    from sqlalchemy import select
    from sqlmodel import col

    from triage.models import Sighting

    with session_scope() as session:
        return list(
            session.execute(
                select(col(Sighting.media_id))
                .where(col(Sighting.target_id) == target_id)
                .order_by(col(Sighting.id))
            ).scalars()
        )


def response_text(response: Any) -> str:
    head = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return f"{head}\n{response.content.decode('latin-1')}"


def _segment(marker: bytes, body: bytes) -> bytes:
    return b"\xff" + marker + struct.pack(">H", len(body) + 2) + body


def _ifd_entry(tag: int, kind: int, count: int, value: bytes) -> bytes:
    return struct.pack("<HHI", tag, kind, count) + value


def _plain_jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    images.make_image(7, size, images.UNMARKED).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def jpeg_with_exif(marker: bytes) -> bytes:
    """A JPEG whose EXIF holds short values cut from ``marker`` (at most 32 bytes each,
    which Pillow's debug log prints as they are) and an orientation, so the safe view
    parses it."""
    short = marker[:31]
    count = 3
    data_at = 8 + 2 + 12 * count + 4
    ifd = (
        b"II*\x00"
        + struct.pack("<I", 8)
        + struct.pack("<H", count)
        + _ifd_entry(0x0112, 3, 1, struct.pack("<HH", 6, 0))  # orientation: rotate
        + _ifd_entry(0x010E, 2, len(short), struct.pack("<I", data_at))  # description
        + _ifd_entry(0x4D4B, 7, 4, marker[-4:])  # an unknown tag, 4 bytes inline
        + b"\0\0\0\0"
        + short
    )
    plain = _plain_jpeg()
    return plain[:2] + _segment(b"\xe1", b"Exif\x00\x00" + ifd) + plain[2:] + b"\n" + marker


def jpeg_with_tag_past_the_end(tag_bytes: bytes) -> bytes:
    """A JPEG whose EXIF names a tag (numbered by two bytes of the file) whose data lies
    beyond the file: Pillow warns 'Skipping tag <number>'."""
    tag = int.from_bytes(tag_bytes, "little")
    ifd = (
        b"II*\x00"
        + struct.pack("<I", 8)
        + struct.pack("<H", 1)
        + _ifd_entry(tag, 7, 5000, struct.pack("<I", 100))
        + b"\0\0\0\0"
    )
    plain = _plain_jpeg()
    return plain[:2] + _segment(b"\xe1", b"Exif\x00\x00" + ifd) + plain[2:]


def broken_files(marker: bytes) -> dict[str, bytes]:
    """Files that sniff as images but whose decoding fails in ways where the library's
    exception text quotes the file (a PNG chunk name, undecodable XMP text, a BMP
    header...). Each carries ``marker``."""
    png = images.png(3, (64, 48), marker=marker)
    # After IHDR: a chunk whose type is not 4 letters -> "broken PNG file (chunk b'...')".
    ihdr_end = 8 + 25
    bad_chunk = struct.pack(">I", len(marker)) + b"\x01\x02\x03\x04" + marker + b"\0\0\0\0"
    iccp = (
        struct.pack(">I", len(marker) + 3)
        + b"iCCP"
        + marker[:40]
        + b"\x00\x00"
        + b"\x78"
        + b"\0\0\0\0"
    )
    # The pixel data split in two IDAT chunks with the bad chunk between: read while the
    # pixels are, it fails with "broken PNG file (chunk b'\\x01\\x02\\x03\\x04')".
    idat = png.index(b"IDAT") - 4
    idat_end = idat + 12 + struct.unpack(">I", png[idat : idat + 4])[0]
    pixels = png[idat + 8 : idat_end - 4]
    half = len(pixels) // 2
    split_idat = (
        images.png_chunk(b"IDAT", pixels[:half])
        + bad_chunk
        + images.png_chunk(b"IDAT", pixels[half:])
    )
    plain = _plain_jpeg()
    xmp = _segment(b"\xe1", b"http://ns.adobe.com/xap/1.0/\x00\xff\xfe" + marker)
    return {
        "png-bad-chunk": png[:ihdr_end] + bad_chunk + png[ihdr_end:],
        "png-bad-chunk-in-idat": png[:idat] + split_idat + png[idat_end:],
        "png-iccp": png[:ihdr_end] + iccp + png[ihdr_end:],
        "png-truncated": png[: len(png) // 2] + marker,
        "jpeg-xmp-not-utf8": plain[:2] + xmp + plain[2:],
        "jpeg-exif": jpeg_with_exif(marker),
        "jpeg-truncated": images.jpeg(4, (64, 48), marker=marker)[:300] + marker,
        "gif-garbage": b"GIF89a" + marker * 4,
        "webp-garbage": b"RIFF\x40\x00\x00\x00WEBPVP8 " + marker * 4,
        "bmp-bad-header": b"BM" + b"\0" * 12 + struct.pack("<I", 40) + marker * 3,
    }


# ---------------------------------------------------------------- findings


# What a process that handles content prints and may leave on disk: in a fresh
# interpreter set up as each process is (this test process imported hotline.worker
# already). The file comes on standard input: it is generated here.
SEALED = """
import resource, sys
data = sys.stdin.buffer.read()
if sys.argv[1] == "api":
    from hotline.web import create_app
    create_app()
else:
    import hotline.worker
from triage import hashing, safeview
hashing.hash_media(data)
safeview._render_image(data, "image/jpeg", safeview.Options(size=64))
print(resource.getrlimit(resource.RLIMIT_CORE)[0])
"""


@pytest.mark.parametrize("process", ["api", "worker"])
def test_a_process_decoding_content_writes_no_core_file_nor_warnings_from_the_file(
    process: str, backend_env: dict[str, str]
) -> None:
    """The worker (hashing) and the API (the safe view) decode hostile files with
    Pillow's native decoders: a crash there must leave no core file, which would hold
    the fetched bytes and their pixels. And Pillow's EXIF parser warns 'Tag data larger
    than file. Skipping tag N', N being two bytes of the file: no such warning reaches
    standard error (a worker's is in its log)."""
    two = b"HM"
    done = subprocess.run(
        [sys.executable, "-c", SEALED, process],
        input=jpeg_with_tag_past_the_end(two),
        capture_output=True,
        cwd=REPO,
        env={**os.environ, **backend_env},
        timeout=60,
        check=True,
    )
    assert done.stdout.decode().split() == ["0"]  # the core file size limit
    assert str(int.from_bytes(two, "little")) not in done.stderr.decode()


# ---------------------------------------------------------------- held: hashing and view


@pytest.mark.parametrize("name", sorted(broken_files(b"x")))
def test_broken_files_leave_no_byte_in_errors_or_debug_logs(
    name: str, debug_logs: _Records
) -> None:
    marker = images.new_marker()
    data = broken_files(marker)[name]
    mime = hashing.sniff(data)
    assert mime in hashing._PIL_FORMATS, name
    texts: list[str] = []
    try:
        hashes = hashing.hash_media(data)
        texts.append(repr(hashes))
    except hashing.HashingError as exc:
        texts += list(exception_texts(exc))
    for unblur in (False, True):
        try:
            safeview._render_image(data, mime, safeview.Options(size=64, unblur=unblur))
        except safeview.MediaUnavailable as exc:
            texts += list(exception_texts(exc))
    leaked = [t for t in texts + debug_logs.lines if has_marker(t) or "\\x01\\x02\\x03" in t]
    assert leaked == []


def test_a_view_of_crafted_files_answers_with_reason_codes_only(
    client: Any, http_server: LocalHTTPServer, debug_logs: _Records
) -> None:
    """Each file is first seen whole (so a media row exists), then the server swaps in a
    broken file carrying a marker: the view's error body, headers and every log line of
    the request hold none of it."""
    analyst = bearer(Role.analyst, "ana@hotline.example")
    marker = images.new_marker()
    for number, (name, broken) in enumerate(sorted(broken_files(marker).items())):
        path = f"/m{number}"
        http_server.route(path, body=images.jpeg(20 + number, (64, 48)))
        target, [media] = seen(http_server.url(path))
        http_server.route(path, body=broken)
        for unblur in (False, True):
            response = view(client, analyst, target, media, unblur=unblur)
            assert response.status_code in (200, 502), (name, response.status_code)
            if response.status_code == 200:
                assert response.headers["cache-control"] == "no-store"
            else:
                assert response.json()["code"] == "media_unavailable"
            assert not has_marker(response_text(response)), name
    assert [line for line in debug_logs.lines if has_marker(line)] == []


def test_exif_values_reach_no_log_even_at_debug(
    client: Any, http_server: LocalHTTPServer, debug_logs: _Records
) -> None:
    """Pillow's TIFF/EXIF parser logs short tag values (repr of up to 32 bytes of the
    file) at DEBUG: the logging configuration pins the PIL logger at WARNING, so neither
    the worker's hashing nor the safe view's EXIF transpose emits them."""
    marker = images.new_marker()
    target, [media] = seen(http_server.route("/exif.jpg", body=jpeg_with_exif(marker)))
    analyst = bearer(Role.analyst, "ana@hotline.example")
    for unblur in (False, True):
        response = view(client, analyst, target, media, unblur=unblur)
        assert response.status_code == 200
        assert not has_marker(response.content)
    assert [line for line in debug_logs.lines if has_marker(line)] == []
    assert logging.getLogger("PIL.TiffImagePlugin").getEffectiveLevel() == logging.WARNING


# ---------------------------------------------------------------- held: server metadata


def test_response_headers_of_the_site_are_not_kept(
    client: Any, http_server: LocalHTTPServer, committed: Engine, debug_logs: _Records
) -> None:
    marker = images.new_marker()
    text = marker.decode()
    body = images.png(5, (64, 48), marker=marker)
    headers = {
        "Content-Type": f"image/png; name={text}",
        "Server": text,
        "Content-Disposition": f'inline; filename="{text}.png"',
        "Set-Cookie": f"s={text}",
        "Link": f"<http://127.0.0.1/{text}>; rel=canonical",
        "X-Anything": text,
    }
    target, [media] = seen(http_server.route("/h.png", body=body, headers=headers))
    analyst = bearer(Role.analyst, "ana@hotline.example")
    for unblur in (False, True):
        response = view(client, analyst, target, media, unblur=unblur)
        assert response.status_code == 200
        assert not has_marker(response_text(response))
    assert tables_with_marker(committed) == []
    assert [line for line in debug_logs.lines if has_marker(line)] == []


def _raw(marker: bytes) -> dict[str, bytes]:
    """Malformed answers whose parser errors (h11) quote the bytes received."""
    return {
        "header-line": b"HTTP/1.1 200 OK\r\nX-Bad " + marker + b"\r\n\r\n",
        "status-line": b"HTTP/1.1 2" + marker + b"\r\n\r\n",
        "reason": b"HTTP/1.1 200 " + marker + b"\r\nContent-Length: 3\r\n\r\nabc",
        "chunk-header": (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + marker + b"\r\n"
        ),
        "content-length": b"HTTP/1.1 200 OK\r\nContent-Length: " + marker + b"\r\n\r\n",
        "gzip-garbage": (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 47\r\n\r\n" + marker
        ),
        "brotli-garbage": (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 47\r\n\r\n" + marker
        ),
        "location": b"HTTP/1.1 302 Found\r\nLocation: http://[" + marker + b"\r\n\r\n",
    }


@pytest.mark.parametrize("name", sorted(_raw(b"x")))
def test_malformed_answers_leave_no_byte_in_the_fetch_error(
    name: str, http_server: LocalHTTPServer, debug_logs: _Records
) -> None:
    marker = images.new_marker()
    url = http_server.add("/raw", Route(raw=_raw(marker)[name]))
    fetcher = Fetcher(FetchPolicy(allow_networks=LOOPBACK, ports=frozenset({http_server.port})))
    texts: list[str] = []
    chained: list[BaseException | None] = []
    try:
        result = fetcher.fetch(url)
        texts += [repr(result), result.content_type or ""]  # a reason phrase is not in it
    except FetchError as exc:
        chained += [exc.__cause__, exc.__context__]
        texts += list(exception_texts(exc))
    assert chained in ([], [None, None])
    assert not any(has_marker(t) for t in texts)
    assert [line for line in debug_logs.lines if has_marker(line)] == []


def test_malformed_answers_become_reason_codes_in_the_database(
    client: Any, http_server: LocalHTTPServer, committed: Engine, debug_logs: _Records
) -> None:
    marker = images.new_marker()
    targets = {}
    for name, raw in _raw(marker).items():
        targets[name] = report(http_server.add(f"/raw/{name}", Route(raw=raw)))
        process(targets[name])
    for name, target in targets.items():
        reason = target_row(target).status_reason
        assert reason is not None, name
        assert reason.replace("_", "").isalnum(), (name, reason)
    assert tables_with_marker(committed) == []
    assert [line for line in debug_logs.lines if has_marker(line)] == []


# ---------------------------------------------------------------- held: page HTML


def test_nothing_of_a_page_but_media_urls_is_kept(
    http_server: LocalHTTPServer, committed: Engine, debug_logs: _Records
) -> None:
    """Title, alt and title texts, comments, scripts (JSON-LD too), inline data: URIs
    (image bytes themselves, in src, srcset, poster, og:image, JSON-LD and a link) and a
    <base> that is a data: URI are never stored; only the URL of the media fetched is."""
    marker = images.new_marker()
    text = marker.decode()
    inline = base64.b64encode(images.png(9, (16, 16), marker=marker)).decode()
    data_uri = f"data:image/png;base64,{inline}"
    http_server.route("/real.jpg", body=images.jpeg(31, (64, 48), marker=marker))
    html = f"""<!doctype html><html><head><title>{text}</title>
<meta name="description" content="{text}">
<meta property="og:image" content="{data_uri}">
<script>var x = "{text}";</script>
<script type="application/ld+json">{{"name": "{text}", "image": "{data_uri}"}}</script>
</head><body>
<!-- {text} -->
<img src="/real.jpg" alt="{text}" title="{text}">
<img src="{data_uri}" alt="inline">
<img srcset="{data_uri} 1x, data:image/png;base64,{inline[:40]} 2x">
<video poster="{data_uri}"></video>
<a href="{data_uri}">x.png</a>
<p>{text}</p></body></html>""".encode()
    page = report(http_server.route("/p", body=html, headers={"Content-Type": "text/html"}))
    process(page)
    assert len(media_ids(page)) == 1
    assert tables_with_marker(committed) == []
    assert [line for line in debug_logs.lines if has_marker(line)] == []
    broken = target_row(page).broken_links
    assert broken is None or all(k.replace("_", "").isalnum() for k in json.loads(broken))


# ---------------------------------------------------------------- held: Celery


def test_the_task_returns_and_logs_no_content(
    http_server: LocalHTTPServer, committed: Engine, debug_logs: _Records
) -> None:
    """The Celery task run as a worker runs it (eagerly): its argument is an id, its
    return value a status; a file that breaks decoding costs a reason code only."""
    from triage import tasks

    marker = images.new_marker()
    broken = broken_files(marker)
    outcomes = []
    for name in ("png-bad-chunk", "jpeg-exif", "webp-garbage"):
        target = report(http_server.route(f"/t/{name}", body=broken[name]))
        result = tasks.process_target.apply(args=(target,))
        outcomes.append((result.status, result.result))
        assert not has_marker(repr(result.result))
    assert all(status == "SUCCESS" for status, _ in outcomes), outcomes
    assert tables_with_marker(committed) == []
    assert [line for line in debug_logs.lines if has_marker(line)] == []
