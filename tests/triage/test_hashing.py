"""Hashing without keeping: types from magic bytes, hashes, limits, and nothing kept.

Every picture is generated in memory by ``tests.fixtures.images``; nothing is written.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import itertools
import os
import re
import struct
import subprocess
import sys
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
import pdqhash
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin, PngImagePlugin

from hotline.errors import HotlineError
from hotline.settings import Settings
from tests.fixtures import images
from triage import hashing
from triage.hashing import (
    HashingError,
    MediaHashes,
    frames_to_hash,
    hash_media,
    is_media,
    sniff,
)

REPO = Path(__file__).resolve().parents[2]


def distance(a: str | None, b: str | None) -> int:
    assert a is not None
    assert b is not None
    return (int(a, 16) ^ int(b, 16)).bit_count()


def assert_crypto(result: MediaHashes, data: bytes) -> None:
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.sha1 == hashlib.sha1(data).hexdigest()  # noqa: S324 - list key, not security
    assert result.md5 == hashlib.md5(data).hexdigest()  # noqa: S324
    assert result.size == len(data)


def full_decode(data: bytes) -> tuple[str, str, int]:
    """The straightforward pipeline: full-size decode, each library on the full image."""
    img = Image.open(io.BytesIO(data))
    img.load()
    bits, quality = pdqhash.compute(np.asarray(img.convert("RGB")))
    return str(imagehash.phash(img)), np.packbits(bits.astype(np.uint8)).tobytes().hex(), quality


# ---------------------------------------------------------------- sniff

EBML_HEADER = bytes.fromhex("4286810142f7810142f2810442f381084282")  # versions, then DocType
EBML_WEBM = b"\x1a\x45\xdf\xa3\x97" + EBML_HEADER + b"\x84webm"
EBML_MKV = b"\x1a\x45\xdf\xa3\x9b" + EBML_HEADER + b"\x88matroska"


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (images.jpeg(1, (32, 24)), "image/jpeg"),
        (images.png(1, (32, 24)), "image/png"),
        (images.gif(1, (32, 24)), "image/gif"),
        (b"GIF87a" + bytes(20), "image/gif"),
        (images.webp(1, (32, 24)), "image/webp"),
        (images.bmp(1, (32, 24)), "image/bmp"),
        (images.svg(), "image/svg+xml"),
        (images.svg(prolog=False), "image/svg+xml"),
        (images.svg(b"a comment first"), "image/svg+xml"),
        (
            b"\xef\xbb\xbf \n<?xml version='1.0'?><!DOCTYPE svg PUBLIC '-//W3C//DTD SVG 1.1//EN' "
            b"'x.dtd' [<!ENTITY e 'x'>]>\n<svg:svg xmlns:svg='http://www.w3.org/2000/svg'/>",
            "image/svg+xml",
        ),
        (images.eps(), "application/postscript"),
        (b"\xc5\xd0\xd3\xc6" + bytes(28), "application/postscript"),
        (images.fake_mp4(), "video/mp4"),
        (images.fake_mp4(brand=b"mp42"), "video/mp4"),
        (images.fake_mp4(brand=b"M4V "), "video/mp4"),
        (images.fake_mp4(brand=b"qt  "), "video/quicktime"),
        (images.fake_mp4(brand=b"3gp5"), "video/3gpp"),
        (EBML_WEBM, "video/webm"),
        (EBML_MKV, "video/x-matroska"),
        (b"RIFF\x00\x10\x00\x00AVI LIST", "video/x-msvideo"),
        (b"FLV\x01\x05\x00\x00\x00\x09", "video/x-flv"),
        (b"\x00\x00\x01\xba\x44\x00\x04", "video/mpeg"),
        (b"\x00\x00\x01\xb3\x14\x00\xf0", "video/mpeg"),
        (bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c") + bytes(14), "video/x-ms-asf"),
        ((b"\x47" + bytes(187)) * 3, "video/mp2t"),
        ((bytes(4) + b"\x47" + bytes(187)) * 3, "video/mp2t"),  # .m2ts
        # CMAF and later ISO brands alone, as HLS and DASH segments carry them.
        (b"\x00\x00\x00\x18ftypcmfc\x00\x00\x00\x00cmfccmfs", "video/mp4"),
        (b"\x00\x00\x00\x14ftypiso8\x00\x00\x00\x00cmf2", "video/mp4"),
        # QuickTime before "ftyp": a movie atom first, or padding then media data.
        (b"\x00\x00\x10\x00moov\x00\x00\x00\x6cmvhd" + bytes(32), "video/quicktime"),
        (b"\x00\x00\x00\x08wide\x00\x00\x00\x00mdat" + bytes(32), "video/quicktime"),
        ("<h1>UTF-16</h1>".encode("utf-16"), "text/html"),
        ("<html>".encode("utf-16-be").join((b"\xfe\xff", b"")), "text/html"),
        (images.html(), "text/html"),
        (b"  \r\n<HTML lang=en>", "text/html"),
        (b"\xef\xbb\xbf<head><title>x", "text/html"),
        (b"<body>", "text/html"),
        (b"<!-- generated --><html><body><svg></svg>", "text/html"),
        (
            b"<?xml version='1.0'?>\n<!DOCTYPE html PUBLIC '-//W3C//DTD XHTML 1.0 Strict//EN'>"
            b"<html xmlns='http://www.w3.org/1999/xhtml'>",
            "text/html",
        ),
    ],
)
def test_sniff_recognises_magic_bytes(data: bytes, mime: str) -> None:
    assert sniff(data) == mime


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8",
        b"hello world",
        b"BM is how this text starts, not a bitmap",
        b'{"json": true}',
        b"%PDF-1.7\n",
        b"PK\x03\x04",
        b"<?xml version='1.0'?><rss version='2.0'></rss>",
        b"<svgx>",
        b"\x1f\x8b\x08\x00",  # gzip (svgz is not opened)
        images.fake_mp4(brand=b"heic"),  # HEIF still image
        images.fake_mp4(brand=b"M4A "),  # audio
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"\x00\x00\x00\x08free" + b"not an atom after the padding",
        b"\x00\x00\x00\x02moov",  # an atom shorter than its header
        "plain text".encode("utf-16"),
    ],
)
def test_sniff_refuses_everything_else(data: bytes) -> None:
    assert sniff(data) is None


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=600))
def test_sniff_never_raises(data: bytes) -> None:
    mime = sniff(data)
    assert mime is None or isinstance(mime, str)


def test_is_media() -> None:
    for mime in ("image/jpeg", "image/svg+xml", "application/postscript", "video/mp4"):
        assert is_media(mime)
    for mime in ("text/html", None, "application/pdf", ""):
        assert not is_media(mime)


# ---------------------------------------------------------------- images

STILLS: dict[str, Callable[[], bytes]] = {
    "jpeg": lambda: images.jpeg(11, (640, 480)),
    "jpeg-progressive": lambda: images.jpeg(12, (1200, 900), progressive=True),
    "jpeg-greyscale": lambda: images.encode(images.make_image(13, (300, 200)).convert("L"), "JPEG"),
    "jpeg-cmyk": lambda: images.encode(images.make_image(14, (300, 200)).convert("CMYK"), "JPEG"),
    "png": lambda: images.png(15, (640, 480)),
    "png-palette": lambda: images.encode(images.make_image(16, (300, 200)).convert("P"), "PNG"),
    "png-rgba": lambda: images.encode(images.make_image(17, (300, 200)).convert("RGBA"), "PNG"),
    "png-16bit": lambda: images.encode(
        Image.fromarray(
            np.asarray(images.make_image(18, (300, 200)).convert("L"), np.uint16) * 257
        ),
        "PNG",
    ),
    "gif": lambda: images.gif(19, (320, 240)),
    "webp": lambda: images.webp(20, (640, 480)),
    "webp-lossless": lambda: images.encode(
        images.make_image(21, (300, 200)), "WEBP", lossless=True
    ),
    "bmp": lambda: images.bmp(22, (320, 240)),
}
MIMES = {"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp"}


@pytest.mark.parametrize("name", list(STILLS))
def test_still_images(name: str) -> None:
    data = STILLS[name]()
    result = hash_media(data)
    expected_size = Image.open(io.BytesIO(data)).size
    assert_crypto(result, data)
    assert result.mime == MIMES.get(name.split("-")[0], "image/bmp")
    assert result.kind == "image"
    assert (result.width, result.height) == expected_size
    assert result.frames == 1
    assert not result.frames_capped
    assert result.phash is not None
    assert len(result.phash) == 16
    assert result.pdq is not None
    assert len(result.pdq) == 64
    assert int(result.phash, 16) >= 0
    assert int(result.pdq, 16) >= 0
    assert result.phash == result.phash.lower()
    assert result.pdq == result.pdq.lower()
    assert result.pdq_quality is not None
    assert 0 <= result.pdq_quality <= 100


def test_small_images_hash_exactly_like_imagehash() -> None:
    """Under 2 x WORKING_SIZE nothing is reduced: pHash is imagehash's, bit for bit."""
    for seed, size in ((31, (640, 480)), (32, (1000, 700)), (33, (64, 64))):
        data = images.png(seed, size)
        assert hash_media(data).phash == str(imagehash.phash(Image.open(io.BytesIO(data))))


def test_pdq_hex_is_the_canonical_text() -> None:
    """First hex digit = bits 255..252 = top of word 15, as ThreatExchange's Hash256::format."""
    grey = images.make_image(34, (400, 300)).convert("L")
    result = hash_media(images.encode(grey, "PNG"))
    arr = np.asarray(grey)
    vector, quality = pdqhash.compute(np.repeat(arr[:, :, None], 3, axis=2))
    # pdqhash.hash_to_vector: vector[j] is bit 255 - j; bit k lives in word k // 16.
    words = [0] * 16
    for j, bit in enumerate(vector):
        k = 255 - j
        words[k // 16] |= int(bit) << (k % 16)
    assert result.pdq == "".join(f"{words[i]:04x}" for i in range(15, -1, -1))
    assert result.pdq_quality == quality


def test_animations_hash_the_first_frame_and_count_frames() -> None:
    first = images.make_image(41, (160, 120))
    alone = hash_media(images.encode(first, "PNG"))
    for data, mime in (
        (images.animated_gif(41, (160, 120), count=3), "image/gif"),
        (images.animated_webp(41, (160, 120), count=3), "image/webp"),
        (
            images.encode(
                first, "PNG", save_all=True, append_images=images.frames(42, (160, 120), 2)
            ),
            "image/png",
        ),
    ):
        result = hash_media(data)
        assert result.mime == mime
        assert result.frames == 3
        assert not result.frames_capped
        assert distance(result.phash, alone.phash) <= 4
        assert distance(result.pdq, alone.pdq) <= 16
    capped = hash_media(images.animated_gif(43, (64, 48), count=5), max_frames=3)
    assert capped.frames == 3
    assert capped.frames_capped


def test_later_frames_of_an_animation_are_hashed_like_the_pictures_they_show() -> None:
    """A known picture hidden as a later frame of an animation must be recognisable:
    each hashed frame has the pHash and PDQ of that frame shown on its own."""
    size = (160, 120)
    alone = [hash_media(images.encode(images.make_image(60 + i, size), "PNG")) for i in range(4)]
    for data in (
        images.animated_gif(60, size, count=4),
        images.animated_webp(60, size, count=4),
        images.encode(
            images.make_image(60, size),
            "PNG",
            save_all=True,
            append_images=images.frames(61, size, 3),
        ),
    ):
        result = hash_media(data)
        assert result.frames == 4
        assert [f.frame for f in result.frame_hashes] == [1, 2, 3]
        for f in result.frame_hashes:
            assert distance(f.phash, alone[f.frame].phash) <= 4
            assert distance(f.pdq, alone[f.frame].pdq) <= 16
            # ... and not of the first frame
            assert distance(f.phash, alone[0].phash) > 8
        assert distance(result.phash, alone[0].phash) <= 4
    # 1: the first frame only, as before.
    assert hash_media(images.animated_gif(60, size, count=4), hashed_frames=1).frame_hashes == ()
    # Still images have no later frames.
    assert hash_media(images.jpeg(60, size)).frame_hashes == ()


def test_frames_that_repeat_an_earlier_one_are_not_hashed_twice() -> None:
    size = (160, 120)
    a, b = images.frames(70, size, 2)
    data = images.encode(a, "GIF", save_all=True, append_images=[b, a, b, a], duration=100)
    result = hash_media(data)
    assert result.frames == 5
    assert [f.frame for f in result.frame_hashes] == [1]  # a and b once each


def test_the_frames_hashed_are_spread_over_the_frames_counted() -> None:
    # 20 frames counted, 8 hashed: the first and 7 spread over 1..19, the last included.
    assert frames_to_hash(20, hashed=8) == [1, 4, 7, 10, 13, 16, 19]
    assert frames_to_hash(3, hashed=8) == [1, 2]
    assert frames_to_hash(20, hashed=2) == [19]
    assert frames_to_hash(1, hashed=8) == []
    assert frames_to_hash(20, hashed=1) == []


def test_later_frames_are_decoded_within_a_pixel_budget_counted_frame_by_frame() -> None:
    # 100x100 frames and room for two frames' pixels: frames 1 and 2 only.
    data = images.animated_gif(80, (100, 100), count=6)
    assert [f.frame for f in hash_media(data, max_pixels=20_000).frame_hashes] == [1, 2]
    assert [f.frame for f in hash_media(data).frame_hashes] == [1, 2, 3, 4, 5]
    # A GIF whose screen and first frame say 1x1 and whose later frames are 300x300:
    # the budget counts the size each frame has, not the first one's.
    growing = images.gif_growing(82, 300, 6)
    assert Image.open(io.BytesIO(growing)).size == (1, 1)
    budgeted = hash_media(growing, max_pixels=200_000)
    assert [f.frame for f in budgeted.frame_hashes] == [1, 2]  # 2 x 90,000 pixels
    assert [f.frame for f in hash_media(growing).frame_hashes] == [1, 2, 3, 4, 5]


def test_a_crafted_last_frame_does_not_hide_the_first_or_the_others() -> None:
    """A 12-byte frame claiming 65535 x 65535 pixels at the end (Pillow calls it a
    decompression bomb) ends the walk; the item keeps its hashes and earlier frames."""
    plain = images.animated_gif(84, (160, 120), count=3)
    crafted = images.with_bomb_frame(plain)
    expected = hash_media(plain)
    result = hash_media(crafted)
    assert result.note is None
    assert result.frames == 4
    assert (result.phash, result.pdq) == (expected.phash, expected.pdq)
    assert result.frame_hashes == expected.frame_hashes
    assert [f.frame for f in result.frame_hashes] == [1, 2]


def test_the_pictures_of_an_mpo_file_are_not_hashed_as_frames() -> None:
    first, second = images.frames(86, (320, 240), 2)
    data = images.encode(first, "MPO", save_all=True, append_images=[second], quality=95)
    result = hash_media(data)
    assert result.mime == "image/jpeg"
    assert result.frames == 2
    assert result.frame_hashes == ()


def test_a_gif_of_100000_frames_hashes_only_within_the_frames_counted() -> None:
    data = images.gif_with_frames(100_000)
    start = time.perf_counter()
    result = hash_media(data, max_frames=20, hashed_frames=20)
    assert time.perf_counter() - start < 2.0
    # The frames alternate between two pictures: each hashed once.
    assert len(result.frame_hashes) <= 1
    assert all(f.frame < 20 for f in result.frame_hashes)


def test_gif_frame_count_matches_pillow() -> None:
    for data in (images.animated_gif(44, (90, 60), count=4), images.gif_with_frames(57)):
        assert hash_media(data, max_frames=1000).frames == Image.open(io.BytesIO(data)).n_frames


def test_frames_are_counted_as_the_file_holds_them_not_as_it_claims() -> None:
    """A stray byte between a GIF's blocks (Pillow and browsers read on past it), and
    an APNG whose acTL claims 2**31 - 1 frames for the two it holds."""
    gif = images.animated_gif(44, (90, 60), count=4)
    at = gif.index(b"\x21\xf9")  # the first frame's graphic control extension
    stray = gif[:at] + b"\x00" + gif[at:]
    assert hash_media(stray, max_frames=1000).frames == Image.open(io.BytesIO(stray)).n_frames == 4
    buffer = io.BytesIO()
    first, second = images.make_image(1, (64, 48)), images.make_image(2, (64, 48))
    first.save(buffer, "PNG", save_all=True, append_images=[second])
    apng = buffer.getvalue()
    at = apng.index(b"acTL")
    claim = struct.pack(">II", 2**31 - 1, 0)
    forged = (
        apng[: at + 4] + claim + struct.pack(">I", zlib.crc32(b"acTL" + claim)) + apng[at + 16 :]
    )
    assert Image.open(io.BytesIO(forged)).n_frames == 2**31 - 1
    hashed = hash_media(forged)
    assert (hashed.frames, hashed.frames_capped) == (2, False)
    assert [f.frame for f in hashed.frame_hashes] == [1]


def _broken_chunk(png: bytes, kind: bytes, *, cut: int = 0) -> bytes:
    """``png`` with its first ``kind`` chunk broken: ``cut`` bytes shorter (its CRC
    right), or with a wrong CRC when ``cut`` is 0."""
    start = png.index(kind) - 4
    (length,) = struct.unpack_from(">I", png, start)
    end = start + 12 + length
    if not cut:
        return png[: end - 4] + bytes(b ^ 0xFF for b in png[end - 4 : end]) + png[end:]
    return png[:start] + images.png_chunk(kind, png[start + 8 : end - 4][:-cut]) + png[end:]


@pytest.mark.parametrize(("kind", "cut"), [(b"acTL", 0), (b"acTL", 1), (b"fcTL", 0), (b"fcTL", 2)])
def test_an_apng_whose_animation_is_broken_is_hashed_as_its_static_picture(
    kind: bytes, cut: int
) -> None:
    """A broken acTL or first fcTL made Pillow refuse the whole file; browsers show the
    picture the file holds for decoders without APNG."""
    buffer = io.BytesIO()
    first, second = images.make_image(3, (64, 48)), images.make_image(4, (64, 48))
    first.save(buffer, "PNG", save_all=True, append_images=[second])
    broken = _broken_chunk(buffer.getvalue(), kind, cut=cut)
    hashed = hash_media(broken)
    assert_crypto(hashed, broken)
    assert hashed.phash == hash_media(images.encode(first, "PNG")).phash
    assert hashed.frames == 1


def test_gif_with_100000_frames_is_hashed_fast_and_capped() -> None:
    data = images.gif_with_frames(100_000)
    start = time.perf_counter()
    result = hash_media(data, max_frames=20)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0
    assert result.frames == 20
    assert result.frames_capped
    assert result.phash is not None
    assert (result.width, result.height) == (1, 1)


# ---------------------------------------------------------------- vectors, videos, not media


def test_vectors_and_videos_are_never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("decoded")

    monkeypatch.setattr(Image, "open", refuse)
    cases = [(images.svg(), "vector"), (images.eps(), "vector")]
    cases += [(images.fake_mp4(), "video"), (EBML_WEBM + bytes(64), "video")]
    for data, kind in cases:
        result = hash_media(data)
        assert_crypto(result, data)
        assert result.kind == kind
        assert (result.width, result.height, result.frames) == (None, None, None)
        assert (result.phash, result.pdq, result.pdq_quality) == (None, None, None)


@pytest.mark.parametrize(
    "data", [images.html(), b"", b"plain text", b"%PDF-1.4", bytes(range(256))]
)
def test_not_media(data: bytes) -> None:
    with pytest.raises(HashingError) as caught:
        hash_media(data)
    assert caught.value.reason == "not_media"
    assert caught.value.partial is None
    assert isinstance(caught.value, HotlineError)


def test_type_comes_from_the_bytes_alone() -> None:
    assert set(inspect.signature(hash_media).parameters) == {
        "data",
        "max_pixels",
        "max_frames",
        "hashed_frames",
    }
    data = images.jpeg(45, (64, 48))
    assert hash_media(data).mime == "image/jpeg"
    # Whatever a server claimed in front of the bytes, the bytes decide.
    with pytest.raises(HashingError):
        hash_media(b"Content-Type: image/jpeg\r\n\r\n" + data)


def test_defaults_are_the_settings_defaults() -> None:
    params = inspect.signature(hash_media).parameters
    fields = Settings.model_fields
    assert params["max_pixels"].default == fields["image_max_pixels"].default
    assert params["max_frames"].default == fields["image_max_frames"].default
    assert params["hashed_frames"].default == fields["image_hashed_frames"].default


# ---------------------------------------------------------------- limits and broken files


def test_huge_png_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    data = images.huge_png_header(60_000, 60_000)
    assert len(data) < 2000
    start = time.perf_counter()
    with pytest.raises(HashingError) as caught:
        hash_media(data)  # Pillow's own bomb limit answers first
    assert caught.value.reason == "image_too_large"
    # With Pillow's limit off (never in this module), the header check still holds.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(HashingError) as caught:
        hash_media(data)
    assert time.perf_counter() - start < 1.0
    partial = caught.value.partial
    assert partial is not None
    assert_crypto(partial, data)
    assert (partial.width, partial.height) == (60_000, 60_000)
    assert partial.phash is None


def test_huge_png_is_refused_without_allocating() -> None:
    """In a fresh process (so the peak RSS is its own) with Pillow's limit off."""
    script = """
import resource, sys, time
from PIL import Image
from tests.fixtures.images import huge_png_header, png
from triage.hashing import HashingError, hash_media
Image.MAX_IMAGE_PIXELS = None
hash_media(png(1, (64, 48)))
data = huge_png_header(60000, 60000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    hash_media(data)
except HashingError as exc:
    reason = exc.reason
elapsed = time.perf_counter() - start
growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(reason, elapsed, growth_kib)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=REPO,
    ).stdout.split()
    assert out[0] == "image_too_large"
    assert float(out[1]) < 1.0
    assert int(out[2]) < 20 * 1024  # KiB: a decode would need 3.6 GB


@pytest.mark.parametrize(
    ("mode", "size", "limit_mib"),
    [
        ("L", (1_000, 100_000), 450),  # a strip: PDQ over all of it took 2.8 GB
        ("L", (100_000, 1_000), 450),
        ("I;16", (10_000, 10_000), 900),  # 16-bit: float64 of it all took 2.5 GB
    ],
)
def test_thin_and_16_bit_pictures_are_hashed_in_bounded_memory(
    mode: str, size: tuple[int, int], limit_mib: int
) -> None:
    """Small files within the pixel limit whose decoding cost many times the picture."""
    ramp = np.linspace(0, 65535 if mode == "I;16" else 255, num=size[0])
    dtype = np.uint16 if mode == "I;16" else np.uint8
    picture = Image.fromarray(np.tile(ramp.astype(dtype), (size[1], 1)))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    del picture
    script = """
import resource, sys
from triage.hashing import hash_media
data = sys.stdin.buffer.read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
hashes = hash_media(data)
growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(hashes.phash, hashes.width, hashes.height, growth_kib)
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=buffer.getvalue(),
        capture_output=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    ).stdout.split()
    assert out[0] != b"None"  # hashed, not given up
    assert (int(out[1]), int(out[2])) == size
    assert int(out[3]) < limit_mib * 1024


def test_a_jpeg_without_its_end_marker_hashes_as_the_whole_file() -> None:
    whole = images.jpeg(48, (800, 600))
    assert whole.endswith(b"\xff\xd9")
    cut = hash_media(whole[:-2])
    full = hash_media(whole)
    assert (cut.phash, cut.pdq, cut.note) == (full.phash, full.pdq, None)
    assert cut.sha256 == hashlib.sha256(whole[:-2]).hexdigest()
    # Cut further, it is hashed as browsers show it: its upper part, the rest grey.
    part = hash_media(whole[: len(whole) // 3])
    assert (part.width, part.height, part.note) == (800, 600, None)
    assert part.phash is not None


# Compressed text that inflates past what Pillow reads of one text chunk (1 MB).
TEXT_BOMB = zlib.compress(b" " * (PngImagePlugin.MAX_TEXT_CHUNK + 1), 9)
# What Pillow alone raises on the files below, on opening them or on loading the pixels.
PILLOW_REFUSALS = (OSError, ValueError, SyntaxError, struct.error, IndexError)

BROKEN_ANCILLARY: dict[str, Callable[[bytes], bytes]] = {
    "gAMA empty": lambda png: images.with_png_chunk(png, b"gAMA", b""),
    "pHYs empty": lambda png: images.with_png_chunk(png, b"pHYs", b""),
    "sRGB empty": lambda png: images.with_png_chunk(png, b"sRGB", b""),
    "tRNS empty": lambda png: images.with_png_chunk(png, b"tRNS", b""),
    "zTXt past 1 MB": lambda png: images.with_png_chunk(png, b"zTXt", b"k\0\0" + TEXT_BOMB),
    "iTXt past 1 MB": lambda png: images.with_png_chunk(png, b"iTXt", b"k\0\1\0\0\0" + TEXT_BOMB),
    "zTXt past 1 MB after the pixels": lambda png: images.with_png_chunk(
        png, b"zTXt", b"k\0\0" + TEXT_BOMB, after_image_data=True
    ),
    "tEXt with a wrong CRC": lambda png: images.with_png_chunk(
        png, b"tEXt", b"k\0v", right_crc=False
    ),
}


def pillow_refuses(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except PILLOW_REFUSALS:
        return True
    return False


@pytest.mark.parametrize("name", list(BROKEN_ANCILLARY))
def test_a_png_with_a_broken_ancillary_chunk_hashes_as_browsers_show_it(name: str) -> None:
    whole = images.png(64, (800, 600))
    data = BROKEN_ANCILLARY[name](whole)
    assert pillow_refuses(data)
    result, expected = hash_media(data), hash_media(whole)
    assert_crypto(result, data)  # of the bytes received, not of the copy decoded
    assert (result.phash, result.pdq, result.pdq_quality, result.note) == (
        expected.phash,
        expected.pdq,
        expected.pdq_quality,
        None,
    )
    # Damage to a critical chunk still leaves the pixels undecoded: IHDR's CRC, or the
    # compressed pixel data overwritten.
    idat = data.index(b"IDAT") + 4
    for damaged in (
        data[:29] + bytes(4) + data[33:],
        data[: idat + 200] + bytes(64) + data[idat + 264 :],
    ):
        broken = hash_media(damaged)
        assert_crypto(broken, damaged)
        assert (broken.phash, broken.pdq, broken.note) == (None, None, "decode_error")


SHORT_SEGMENTS: dict[str, tuple[int, bytes, bool]] = {
    "APP0 JFIF of 9 bytes": (0xE0, b"JFIF\0", True),
    "APP14 Adobe of 9 bytes": (0xEE, b"Adobe", False),
    "APP2 ICC profile of 16 bytes": (0xE2, b"ICC_PROFILE\0", False),
}


@pytest.mark.parametrize("name", list(SHORT_SEGMENTS))
def test_a_jpeg_with_a_short_segment_hashes_as_browsers_show_it(name: str) -> None:
    """libjpeg, which decodes the pixels, ignores these segments when they are shorter
    than their fixed header, as browsers do; Pillow's own parser refused the file."""
    whole = images.jpeg(65, (800, 600))
    marker, body, instead_of_jfif = SHORT_SEGMENTS[name]
    data = images.with_jpeg_segment(whole, marker, body, instead_of_jfif=instead_of_jfif)
    assert pillow_refuses(data)
    expected = hash_media(whole)
    # Also without its end marker: both mended in the one copy.
    for received in (data, data[:-2]):
        result = hash_media(received)
        assert_crypto(result, received)
        assert (result.phash, result.pdq, result.pdq_quality, result.note) == (
            expected.phash,
            expected.pdq,
            expected.pdq_quality,
            None,
        )


def test_mending_a_png_of_a_million_chunks_takes_one_copy() -> None:
    """A broken chunk first, then a million empty ones (12 MB): the copy decoded is
    written as the chunks are walked, not gathered first (a list of slices took
    0.5 GB for two million), and Pillow then reads none of them."""
    png = images.png(66, (64, 48))
    data = images.with_png_chunk(
        images.with_png_chunk(png, b"prIv", b"", count=1_000_000), b"gAMA", b""
    )
    script = """
import re, sys
from triage.hashing import hash_media
def peak_kib():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
data = sys.stdin.buffer.read()
before = peak_kib()
hashes = hash_media(data)
print(hashes.phash, hashes.note, peak_kib() - before)
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=data,
        capture_output=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    ).stdout.split()
    assert out[0].decode() == hash_media(png).phash
    assert out[1] == b"None"
    assert int(out[2]) < 48 * 1024  # KiB: the copy is under 12 MB


# EXIF orientation -> how the stored pixels are made from the picture as shown.
_STORED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("orientation", sorted(_STORED))
def test_a_picture_is_hashed_as_shown_whatever_its_exif_orientation(orientation: int) -> None:
    """A phone stores the sensor's pixels and an orientation tag; an image host turns
    the pixels and drops the tag. Both are the same picture to a viewer, and hash so."""
    shown = images.make_image(31, (600, 800))
    host_copy = hash_media(images.encode(shown, "JPEG", quality=90))
    exif = Image.Exif()
    exif[0x0112] = orientation
    phone = images.encode(shown.transpose(_STORED[orientation]), "JPEG", exif=exif.tobytes())
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(phone))).size == (600, 800)

    hashed = hash_media(phone)

    assert hashed.sha256 == hashlib.sha256(phone).hexdigest()
    assert (hashed.width, hashed.height) == (600, 800)  # its size as shown, too
    assert distance(hashed.phash, host_copy.phash) <= 2
    assert distance(hashed.pdq, host_copy.pdq) <= 12


XMP_TURNED = (
    b"http://ns.adobe.com/xap/1.0/\x00"
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF'
    b' xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description'
    b' xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF>'
    b"</x:xmpmeta>"
)


def test_an_orientation_in_xmp_alone_leaves_the_picture_unturned() -> None:
    """Browsers turn a picture by its EXIF block only; Pillow's getexif also reads
    XMP's tiff:Orientation. Metadata alone must not turn what is hashed."""
    stored = images.encode(images.make_image(33, (400, 300)), "JPEG", quality=90)
    with_xmp = images.with_jpeg_segment(stored, 0xE1, XMP_TURNED, instead_of_jfif=False)
    assert Image.open(io.BytesIO(with_xmp)).getexif().get(0x0112) == 6  # what Pillow says
    plain, hashed = hash_media(stored), hash_media(with_xmp)
    assert (hashed.width, hashed.height) == (400, 300)
    assert (hashed.phash, hashed.pdq) == (plain.phash, plain.pdq)


def test_a_turned_picture_has_its_size_as_shown_even_when_not_decoded() -> None:
    """Pixels that do not decode, or too many of them: the size recorded is still the
    picture's as shown."""
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = images.encode(images.make_image(34, (400, 300)), "JPEG", exif=exif.tobytes())
    scan = turned.index(b"\xff\xda")
    broken = turned[: scan + 4] + b"\x09" + turned[scan + 5 :]  # a scan of 9 components
    undecoded = hash_media(broken)
    assert undecoded.phash is None
    assert (undecoded.width, undecoded.height) == (300, 400)
    with pytest.raises(HashingError) as caught:
        hash_media(turned, max_pixels=100_000)
    assert caught.value.partial is not None
    assert (caught.value.partial.width, caught.value.partial.height) == (300, 400)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_a_broken_exif_block_leaves_the_picture_unturned() -> None:
    picture = images.make_image(32, (600, 800))
    plain = hash_media(images.encode(picture, "JPEG", quality=90))
    broken = hash_media(images.encode(picture, "JPEG", quality=90, exif=b"Exif\x00\x00MM\x00*junk"))
    assert distance(broken.phash, plain.phash) <= 2


def test_a_picture_carried_in_the_alpha_channel_is_hashed_as_shown_on_a_white_page() -> None:
    """Every pixel black, the picture in how transparent each is: a browser shows it on
    the page; without its alpha it would hash as a blank. A picture with ordinary
    transparency keeps the hashes of its colours."""
    picture = images.make_image(41, (640, 480)).convert("L")
    ink = picture.point(lambda value: 255 - value)
    black = Image.new("L", picture.size, 0)
    carried = hash_media(images.encode(Image.merge("LA", (black, ink)), "PNG"))
    on_white = hash_media(images.encode(picture, "PNG"))
    assert distance(carried.phash, on_white.phash) <= 2
    assert distance(carried.pdq, on_white.pdq) <= 8
    assert carried.pdq_quality == on_white.pdq_quality

    logo = images.make_image(42, (640, 480)).convert("RGBA")
    logo.putalpha(200)
    opaque = hash_media(images.encode(logo.convert("RGB"), "PNG"))
    assert hash_media(images.encode(logo, "PNG")).phash == opaque.phash


def test_huge_jpeg_is_refused() -> None:
    with pytest.raises(HashingError) as caught:
        hash_media(images.huge_jpeg_header(60_000, 60_000))
    assert caught.value.reason == "image_too_large"


def test_max_pixels_is_honoured() -> None:
    data = images.png(46, (1500, 1000))
    with pytest.raises(HashingError) as caught:
        hash_media(data, max_pixels=1_000_000)
    partial = caught.value.partial
    assert partial is not None
    assert_crypto(partial, data)
    assert (partial.width, partial.height) == (1500, 1000)
    assert hash_media(data, max_pixels=1_500_000).phash is not None


def test_a_webp_counts_three_times_against_max_pixels() -> None:
    """Decoding a WebP costs 16 bytes a pixel, a PNG about 6: the largest WebP allowed
    costs about what the largest PNG does."""
    webp, png = images.webp(47, (1000, 500)), images.png(47, (1000, 500))
    assert hash_media(png, max_pixels=1_000_000).phash is not None
    with pytest.raises(HashingError) as caught:
        hash_media(webp, max_pixels=1_000_000)
    assert caught.value.reason == "image_too_large"
    assert hash_media(webp, max_pixels=1_500_000).phash is not None


@pytest.mark.parametrize(
    "data",
    [
        images.png(48, (400, 300))[:30000],
        images.gif(49, (200, 150))[:5000],
        images.webp(50, (400, 300))[:3000],
        images.bmp(51, (200, 150))[:9000],
        b"\x89PNG\r\n\x1a\n" + b"not really" * 20,
        b"\xff\xd8\xff" + bytes(200),
    ],
)
def test_broken_images_keep_their_cryptographic_hashes(data: bytes) -> None:
    result = hash_media(data)
    assert_crypto(result, data)
    assert result.kind == "image"
    assert (result.phash, result.pdq, result.pdq_quality) == (None, None, None)


def small_files() -> list[bytes]:
    return [
        images.jpeg(52, (48, 32)),
        images.png(53, (48, 32)),
        images.animated_gif(54, (24, 16), count=2),
        images.webp(55, (48, 32)),
        images.bmp(56, (24, 16)),
    ]


@settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.sampled_from(small_files()),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    st.integers(8, 10_000),
)
def test_mangled_images_never_raise_anything_but_hashing_error(
    data: bytes, edits: list[tuple[int, int]], keep: int
) -> None:
    mangled = bytearray(data[:keep])
    for at, value in edits:
        mangled[at % len(mangled)] = value
    try:
        result = hash_media(bytes(mangled), max_pixels=1_000_000)
    except HashingError as exc:
        reason: str = exc.reason
    else:
        reason = "hashed"
        assert result.sha256 == hashlib.sha256(mangled).hexdigest()
    assert reason in ("hashed", "not_media", "image_too_large")


# Parts browsers (and libjpeg) skip, padded into a file anywhere before its pixels.
_JPEG_SKIPPED = [
    b"\xff\xfe\x00\x05hi!",  # a comment
    b"\xff\xef\x00\x04\x00\x00",  # APP15
    b"\xff\xe1\x00\x06http",  # APP1 that is not EXIF
    b"\xff",  # a fill byte
    b"\xff\xd3",  # a restart marker outside a scan
]
_PNG_SKIPPED = [
    images.png_chunk(b"zzZz", b""),
    images.png_chunk(b"tEXt", b"k\x00v"),
    images.png_chunk(b"pHYs", b"\x00\x00\x0b\x13\x00\x00\x0b\x13\x01"),
]


@settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.sampled_from(["jpeg", "png"]),
    st.lists(st.integers(0, 4), min_size=1, max_size=30),
    st.integers(0, 10),
    st.booleans(),
)
def test_padding_with_parts_browsers_skip_never_changes_what_is_hashed(
    kind: str, parts: list[int], where: int, flooded: bool
) -> None:
    """Whatever mix of skipped parts pads a file, wherever before its pixels, and
    whether or not it counts as a flood (the limits lowered to a few parts), the
    picture hashes as the file without them."""
    clean = CLEAN_FILES[kind]
    if kind == "jpeg":
        places = [2] + [m.start() for m in re.finditer(rb"\xff[\xc0\xc4\xdb]", clean)]
        padding = b"".join(_JPEG_SKIPPED[p] for p in parts)
    else:
        places = [33, clean.index(b"IDAT") - 4, clean.index(b"IEND") - 4]
        padding = b"".join(_PNG_SKIPPED[p % len(_PNG_SKIPPED)] for p in parts)
    at = places[where % len(places)]
    padded = clean[:at] + padding + clean[at:]
    expected = hash_media(clean)
    with pytest.MonkeyPatch.context() as patch:
        if flooded:
            patch.setattr(hashing, "_FLOOD", 2)
            patch.setattr(hashing, "_FLOOD_BYTES", 2)
        hashed = hash_media(padded)
    assert_crypto(hashed, padded)
    shown = (hashed.phash, hashed.pdq, hashed.width, hashed.height)
    assert shown == (expected.phash, expected.pdq, expected.width, expected.height)


CLEAN_FILES = {
    "jpeg": images.jpeg(59, (64, 48)),
    "png": images.png(60, (64, 48)),
}


# ---------------------------------------------------------------- nothing kept


def test_errors_never_carry_content() -> None:
    marker = images.new_marker()
    cases = [
        images.html(marker),
        marker + images.jpeg(57, (32, 24)),
        images.huge_png_header(60_000, 60_000, marker),
        images.huge_jpeg_header(60_000, 60_000, marker),
        images.encode(images.make_image(58, (2000, 1000)), "PNG", marker=marker),
    ]
    for data in cases:
        assert marker in data
        with pytest.raises(HashingError) as caught:
            hash_media(data, max_pixels=1_000_000)
        exc = caught.value
        text = "".join(traceback.format_exception(exc))
        for shown in (str(exc), repr(exc), exc.detail, text, repr(exc.args), repr(exc.partial)):
            assert marker.decode() not in shown
            assert marker.hex() not in shown
        assert exc.__cause__ is None
        assert exc.__context__ is None


def test_broken_images_say_nothing_either() -> None:
    marker = images.new_marker()
    png = images.png(59, (64, 48))
    # A critical chunk named after the marker: Pillow's own error would quote it.
    bad = png[:33] + len(marker[:4]).to_bytes(4, "big") + b"HOTL" + marker[:4] + bytes(4) + png[33:]
    for data in (bad, images.jpeg(60, (64, 48), marker=marker)[:400]):
        assert marker.decode() not in repr(hash_media(data))


AUDITED: list[tuple[str, tuple[Any, ...]]] = []
_AUDITING = [False]
_HOOKED: list[bool] = []
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _AUDITING[0]:
        return
    if event == "open":
        mode, flags = (args[1] or ""), (args[2] or 0)
        if any(c in str(mode) for c in "wax+") or flags & _WRITE_FLAGS:
            AUDITED.append((event, args))
    elif event.startswith(("tempfile.", "shutil.")) or event in (
        "os.mkdir",
        "os.rename",
        "os.link",
        "os.symlink",
        "os.truncate",
    ):
        AUDITED.append((event, args))


@pytest.fixture
def audit_writes() -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """Writes and temporary files seen while the test runs (audit hooks, PEP 578)."""
    if not _HOOKED:
        sys.addaudithook(_audit)  # hooks cannot be removed; _AUDITING scopes this one
        _HOOKED.append(True)
    AUDITED.clear()
    _AUDITING[0] = True
    try:
        with open(os.devnull, "wb"):  # the hook sees writes: prove it once
            pass
        assert AUDITED, "audit hook inactive"
        AUDITED.clear()
        yield AUDITED
    finally:
        _AUDITING[0] = False


def test_hashing_writes_no_file(audit_writes: list[tuple[str, tuple[Any, ...]]]) -> None:
    files = [factory() for factory in STILLS.values()]
    files += [images.animated_gif(61), images.animated_webp(62), images.svg(), images.eps()]
    files += [images.fake_mp4(), images.jpeg(63, (32, 24))[:500], images.huge_png_header(9, 9)]
    for data in files:
        hash_media(data)
    assert audit_writes == []


def test_fixtures_embed_the_marker() -> None:
    marker = images.new_marker()
    img = images.make_image(64, (64, 48), marker)
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP"):
        data = images.encode(img, fmt)
        assert marker in data
        assert hash_media(data).phash is not None
    for data in (
        images.svg(marker),
        images.eps(marker),
        images.fake_mp4(marker),
        images.html(marker),
        images.gif_with_frames(3, marker),
        images.huge_png_header(10, 10, marker),
        images.animated_webp(65, marker=marker),
    ):
        assert marker in data


# ---------------------------------------------------------------- draft mode and near duplicates

# (texture, size, format): ~20 pictures, 12 MP and 1080p among them. JPEGs take the
# draft path (reduced-scale decode), the others the box-reduce path.
TOLERANCE_SET = [
    ("natural", (4000, 3000), "JPEG"),
    ("natural", (3000, 4000), "JPEG"),
    ("natural", (1920, 1080), "JPEG"),
    ("natural", (1080, 1920), "JPEG"),
    ("natural", (2048, 1536), "JPEG"),
    ("natural", (1280, 720), "JPEG"),
    ("natural", (640, 480), "JPEG"),
    ("natural", (2400, 1800), "PNG"),
    ("natural", (1920, 1080), "PNG"),
    ("natural", (1920, 1080), "WEBP"),
    ("checker", (4000, 3000), "JPEG"),
    ("checker", (1920, 1080), "JPEG"),
    ("checker", (1280, 720), "JPEG"),
    ("checker", (1920, 1080), "PNG"),
    ("text", (4000, 3000), "JPEG"),
    ("text", (1920, 1080), "JPEG"),
    ("text", (2048, 1536), "JPEG"),
    ("text", (1280, 720), "JPEG"),
    ("natural", (320, 240), "GIF"),
    ("checker", (800, 600), "JPEG"),
]
# Measured over 144 pictures of these kinds, 12 MP to 800x600, JPEG and PNG
# (docs/hashing.md): pHash <= 2; PDQ <= 10 (natural), <= 8 (checker), <= 26 (text,
# whose PDQ moves as much under a plain 90 % resize at full size); quality <= 1.
PHASH_TOLERANCE = 4
PDQ_TOLERANCE = {"natural": 16, "checker": 16, "text": 32}


def test_reduced_decode_stays_close_to_full_decode() -> None:
    natural = []
    for seed, (texture, size, fmt) in enumerate(TOLERANCE_SET, start=100):
        img = images.make_image(seed, size, texture=texture)
        opts = {"quality": 90} if fmt in ("JPEG", "WEBP") else {"compress_level": 1}
        data = images.encode(img, fmt, **opts)
        del img
        result = hash_media(data)
        phash, pdq, quality = full_decode(data)
        assert distance(result.phash, phash) <= PHASH_TOLERANCE, (texture, size, fmt)
        assert distance(result.pdq, pdq) <= PDQ_TOLERANCE[texture], (texture, size, fmt)
        assert result.pdq_quality is not None
        assert abs(result.pdq_quality - quality) <= 5
        if texture == "natural":
            natural.append(distance(result.pdq, pdq))
    assert sum(natural) / len(natural) <= 6  # the common case: a few bits of 256


NEAR_PHASH = Settings.model_fields["phash_radius"].default
NEAR_PDQ = Settings.model_fields["pdq_radius"].default


def test_near_duplicates_are_near_and_unrelated_pictures_far() -> None:
    originals = []
    for seed in range(1, 7):
        found = {name: hash_media(data) for name, data in images.variants(seed).items()}
        original = found.pop("original")
        originals.append(original)
        for name, variant in found.items():
            assert distance(variant.phash, original.phash) <= NEAR_PHASH, (seed, name)
            assert distance(variant.pdq, original.pdq) <= NEAR_PDQ, (seed, name)
    for a, b in itertools.combinations(originals, 2):
        assert distance(a.phash, b.phash) > 2 * NEAR_PHASH
        assert distance(a.pdq, b.pdq) > 2 * NEAR_PDQ


# -- Files flooded with optional parts


def _pillow_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many chunks or segments Pillow's header parsers read the data of, counted."""
    reads = [0]
    safe_read = ImageFile._safe_read

    def counted(fp: Any, size: int) -> bytes:
        reads[0] += 1
        return safe_read(fp, size)

    monkeypatch.setattr(ImageFile, "_safe_read", counted)
    return reads


def _drawn_in_transparency(seed: int) -> bytes:
    """A palette PNG of black entries whose picture is in their transparency (tRNS):
    browsers show it on the page; without its tRNS it is a blank."""
    grey = images.make_image(seed, (320, 240)).convert("L")
    drawn = Image.frombytes("P", grey.size, grey.tobytes())
    drawn.putpalette([0, 0, 0] * 256)
    png = images.encode(drawn, "PNG", transparency=bytes(255 - i for i in range(256)))
    assert distance(hash_media(png).phash, hash_media(images.encode(grey, "PNG")).phash) <= 2
    return png


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")  # Pillow's advice
def test_a_png_repaired_keeps_its_transparency_and_orientation() -> None:
    """A broken gAMA (of zero length) makes Pillow refuse the file, which is decoded
    again without its ancillary chunks: but for its first sound tRNS (a picture drawn in
    its transparency) and eXIf (its orientation), which change the picture shown. A tRNS
    Pillow refuses (too short for a truecolour picture) goes, as before."""
    drawn = _drawn_in_transparency(56)
    broken = images.with_png_chunk(drawn, b"gAMA", b"")
    assert (hash_media(broken).phash, hash_media(broken).pdq) == (
        hash_media(drawn).phash,
        hash_media(drawn).pdq,
    )

    exif = Image.Exif()
    exif[0x0112] = 6
    turned = images.encode(images.make_image(57, (400, 300)), "PNG", exif=exif.tobytes())
    hashed = hash_media(images.with_png_chunk(turned, b"gAMA", b""))
    assert (hashed.width, hashed.height) == (300, 400)
    assert hashed.phash == hash_media(turned).phash

    rgb = images.png(58, (320, 240))
    short = images.with_png_chunk(images.with_png_chunk(rgb, b"gAMA", b""), b"tRNS", b"\x00\x01")
    assert hash_media(short).phash == hash_media(rgb).phash


def _before_image_data(png: bytes, *chunks: bytes) -> bytes:
    at = png.index(b"IDAT") - 4
    return png[:at] + b"".join(chunks) + png[at:]


def _exif_chunk(orientation: int, *, right_crc: bool = True) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    chunk = images.png_chunk(b"eXIf", exif.tobytes()[6:])  # without "Exif\0\0"
    return chunk if right_crc else chunk[:-4] + bytes(b ^ 0xFF for b in chunk[-4:])


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")  # Pillow's advice
@pytest.mark.parametrize("flooded", [False, True])
def test_a_png_is_hashed_with_the_transparency_and_orientation_browsers_read(
    flooded: bool,
) -> None:
    """Browsers (libpng) read a PNG's first sound tRNS and eXIf before the pixels: they
    skip a broken one and ignore a second one and one after the pixels. Pillow read
    the last, those after the pixels too: an opaque second tRNS hashed a picture drawn
    in its transparency as a blank (32 bits of pHash), a second eXIf turned the picture
    (26); and a flooded file kept a broken first one, leaving out the sound one after."""

    def flood(png: bytes) -> bytes:
        return images.with_png_chunk(png, b"tEXt", b"k\x00v", count=1_100) if flooded else png

    drawn = _drawn_in_transparency(59)
    expected = hash_media(drawn)
    opaque = images.png_chunk(b"tRNS", b"\xff" * 256)
    broken = opaque[:-4] + bytes(b ^ 0xFF for b in opaque[-4:])
    at = drawn.index(b"tRNS") - 4
    for png in (
        _before_image_data(drawn, opaque),
        images.with_png_chunk(drawn, b"tRNS", b"\xff" * 256, after_image_data=True),
        drawn[:at] + broken + drawn[at:],
    ):
        hashed = hash_media(flood(png))
        assert (hashed.phash, hashed.pdq) == (expected.phash, expected.pdq)

    plain = images.png(60, (400, 300))
    upright, turned = hash_media(plain), hash_media(_before_image_data(plain, _exif_chunk(6)))
    assert (turned.width, turned.height) == (300, 400)
    trailing = images.with_png_chunk(plain, b"eXIf", _exif_chunk(6)[8:-4], after_image_data=True)
    for png, shown in (
        (_before_image_data(plain, _exif_chunk(1), _exif_chunk(6)), upright),
        (trailing, upright),
        (_before_image_data(plain, _exif_chunk(1, right_crc=False), _exif_chunk(6)), turned),
    ):
        hashed = hash_media(flood(png))
        assert (hashed.width, hashed.height) == (shown.width, shown.height)
        assert hashed.phash == shown.phash


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")  # Pillow's advice
@pytest.mark.parametrize("where", ["before the pixels", "after the pixels"])
def test_a_png_flooded_with_chunks_is_hashed_as_shown_without_reading_them(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow reads every chunk in Python (a 25 MB file of empty ones: 4 s and 230 MB);
    browsers skip them. Past 1,000 the picture is decoded without them, but for its
    transparency (here the picture is drawn in it) and its EXIF."""
    clean = _drawn_in_transparency(51)
    after = where == "after the pixels"
    flooded = images.with_png_chunk(clean, b"zzZz", b"", count=5_000, after_image_data=after)
    flooded = images.with_png_chunk(flooded, b"tEXt", b"k\x00v", count=100, after_image_data=after)
    expected = hash_media(clean)

    reads = _pillow_reads(monkeypatch)
    hashed = hash_media(flooded)

    assert reads[0] < 20
    assert_crypto(hashed, flooded)
    assert (hashed.phash, hashed.pdq) == (expected.phash, expected.pdq)


def _pillow_jpeg_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many markers Pillow's JPEG header parser reads (fill bytes and lengths
    among them), counted."""
    steps = [0]
    read_marker = JpegImagePlugin.i16

    def counted(data: bytes, offset: int = 0) -> int:
        steps[0] += 1
        return read_marker(data, offset)

    monkeypatch.setattr(JpegImagePlugin, "i16", counted)
    return steps


@pytest.mark.parametrize(
    ("padding", "count"),
    [
        (b"\xff\xfe\x00\x02", 5_000),  # empty comments
        (b"\xff\xe1\x00\x06http", 5_000),  # APP1 segments that are not EXIF
        (b"\xff", 70_000),  # fill bytes, which may precede any marker
        (b"\xff\x00", 35_000),  # stuffed zeros outside a scan, which both parsers skip
        (b"\xff\x00\x01", 30_000),  # and stray bytes between them, one run
    ],
)
def test_a_jpeg_flooded_with_segments_is_hashed_as_shown_without_reading_them(
    padding: bytes, count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Comments or XMP-like segments by the thousand before the EXIF block: Pillow kept
    each (a 25 MB file: up to 7 s and 770 MB), and stepped over fill bytes one at a
    time (25 MB: 9.5 s). Past 1,000 parts or 64 KiB of steps the picture is decoded
    without them, but for the EXIF (its orientation) and the JFIF and Adobe segments."""
    shown = images.make_image(52, (300, 400))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter: shown 300 wide and 400 high
    clean = images.encode(shown.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif.tobytes())
    flooded = clean[:2] + padding * count + clean[2:]
    expected = hash_media(clean)
    assert (expected.width, expected.height) == (300, 400)

    steps = _pillow_jpeg_steps(monkeypatch)
    hashed = hash_media(flooded)

    assert steps[0] < 100
    assert_crypto(hashed, flooded)
    assert (hashed.width, hashed.height) == (300, 400)
    assert (hashed.phash, hashed.pdq) == (expected.phash, expected.pdq)


@pytest.mark.parametrize("marker", [b"\xff\xd8", b"\xff\xd9", b"\xff\xf0"])
def test_a_flooded_jpeg_keeps_the_markers_that_stop_libjpeg(marker: bytes) -> None:
    """A second SOI, an EOI or a reserved marker before the scan: Pillow steps over it,
    libjpeg (here and in browsers) gives up. Left in the copy, the picture stays
    undecoded, flooded or not."""
    clean = images.encode(images.make_image(54, (320, 240)), "JPEG")
    assert hash_media(clean).phash is not None
    for comments in (0, 1_200):
        data = clean[:2] + b"\xff\xfe\x00\x02" * comments + marker + clean[2:]
        assert hash_media(data).phash is None
    # Within a run of stray bytes and stuffed zeros that makes the file a flood.
    run = b"\xff\x00\x01" * 30_000
    assert hash_media(clean[:2] + run + marker + run + clean[2:]).phash is None
    assert hash_media(clean[:2] + run + run + clean[2:]).phash == hash_media(clean).phash


def test_a_few_optional_parts_are_read_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to 1,000 the file is decoded whole, as before; one more and it is not."""
    clean = images.encode(images.make_image(53, (320, 240)), "JPEG")
    padded = clean[:2] + b"\xff\xfe\x00\x02" * 998 + clean[2:]  # its JFIF, its comment
    reads = _pillow_reads(monkeypatch)
    assert hash_media(padded).phash == hash_media(clean).phash
    assert reads[0] >= 1_000
    reads[0] = 0
    assert hash_media(padded[:2] + b"\xff\xfe\x00\x02" + padded[2:]).phash == (
        hash_media(clean).phash
    )
    assert reads[0] < 20


def test_a_flooded_jpeg_keeps_the_adobe_segment_libjpeg_reads() -> None:
    """libjpeg takes the colour transform of the last Adobe segment: a flooded copy that
    kept the first (a decoy saying YCbCr before the file's own, RGB) hashed a picture
    of garbled colours, 22 bits of pHash from the one shown."""
    stored = io.BytesIO()
    images.make_image(54, (320, 240)).save(stored, "JPEG", quality=90, keep_rgb=True)
    clean = stored.getvalue()
    at = clean.index(b"\xff\xee")
    adobe = clean[at : at + 2 + struct.unpack_from(">H", clean, at + 2)[0]]
    assert adobe[-1] == 0  # transform: none, the samples are RGB
    decoy = adobe[:-1] + b"\x01"  # transform: YCbCr
    expected = hash_media(clean)
    assert hash_media(clean[:2] + decoy + clean[2:]).phash == expected.phash
    flooded = clean[:2] + decoy + b"\xff\xfe\x00\x02" * 1_001 + clean[2:]

    hashed = hash_media(flooded)

    assert (hashed.phash, hashed.pdq) == (expected.phash, expected.pdq)
