"""Hashing without keeping: what a fetched file is, and its hashes, from bytes in memory.

Invariants of this module:

- Bytes in, hashes out. The bytes are read from the caller's ``bytes`` object and from
  an ``io.BytesIO`` over it, or over one copy in memory (a JPEG's end marker added, or
  an optional part that Pillow refused or reads and browsers skip left out: see
  :func:`decode_as_shown`); the file hashes are always of the bytes
  received. Nothing is written to a file, a log or an exception. Errors carry a fixed
  reason, never a fragment of the content, and are raised outside ``except`` blocks so
  that no library exception (whose text may quote the file) rides along as
  ``__context__``. Decoded pixels live in locals and go when the call returns.
- The type comes from the magic bytes (:func:`sniff`), never from a header or a name.
- SVG and EPS are never decoded (EPS would run Ghostscript); videos get the
  cryptographic hashes only. Images are opened only with the Pillow plugin the magic
  bytes name, with Pillow's decompression-bomb limit left on, and the pixel count is
  checked from the header before any pixel is decoded (that of each later frame of an
  animation as it is reached, see :func:`walk_frames`).
- One decode per image, of the first frame (a second, from the copy, if Pillow refused
  the file over an optional part): JPEGs are decoded at a reduced scale straight to
  luma (draft mode), others are box-reduced after decoding; pHash and PDQ are computed
  from that one greyscale working image (``docs/hashing.md`` gives the measured
  distance to a full-size decode). Of an animation, a few later frames are hashed too
  (``hashed_frames``), within a budget of decoded pixels.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Final, Literal, Protocol, TypeVar, cast

import imagehash
import numpy as np
import pdqhash
from PIL import Image, ImageFile

from hotline.errors import HotlineError

Kind = Literal["image", "video", "vector"]
Reason = Literal["not_media", "image_too_large", "decode_error"]
# Why a media item is hashed only in part: too many pixels to decode (no pHash or PDQ),
# pixels that do not decode (no pHash or PDQ), more frames than counted.
Note = Literal["image_too_large", "decode_error", "frames_capped"]

#: Shorter side, in pixels, of the greyscale image pHash and PDQ are computed from, at
#: least: the image is scaled by the smallest of 1/8, 1/4, 1/2, 1 that keeps this much
#: (JPEGs while decoding, in draft mode; other formats by a box reduction after).
WORKING_SIZE: Final = 512
_LONGEST: Final = 4 * WORKING_SIZE  # the longest side of the working image
_BAND_ROWS: Final = 512

_KINDS: Final[dict[str, Kind]] = {
    "image/jpeg": "image",
    "image/png": "image",
    "image/gif": "image",
    "image/webp": "image",
    "image/bmp": "image",
    "image/svg+xml": "vector",
    "application/postscript": "vector",
    "video/mp4": "video",
    "video/quicktime": "video",
    "video/3gpp": "video",
    "video/3gpp2": "video",
    "video/webm": "video",
    "video/x-matroska": "video",
    "video/x-msvideo": "video",
    "video/x-flv": "video",
    "video/x-ms-asf": "video",
    "video/mpeg": "video",
    "video/mp2t": "video",
}

# Formats whose later frames are hashed (and shown by the safe view): animations.
# MPO is not: its frames are separate JPEG pictures of one scene, each of its own size,
# and its plugin keeps the first frame's reduced decoding scale for the others.
ANIMATED_FORMATS: Final = frozenset({"GIF", "PNG", "WEBP"})

# The only Pillow plugin each image type may be opened with.
_PIL_FORMATS: Final[dict[str, list[str]]] = {
    "image/jpeg": ["JPEG"],  # MPO (multi-picture JPEG) comes through the JPEG plugin
    "image/png": ["PNG"],
    "image/gif": ["GIF"],
    "image/webp": ["WEBP"],
    "image/bmp": ["BMP"],
}

_DETAILS: Final[dict[Reason, str]] = {
    "not_media": "The bytes are not an image, vector image or video of a known type.",
    "image_too_large": "The image has more pixels than hashing decodes.",
    "decode_error": "The image could not be decoded.",
}


@dataclass(frozen=True, slots=True)
class FrameHashes:
    """pHash and PDQ of a later frame of an animation (numbered from 0, the first frame,
    whose hashes are the media item's own)."""

    frame: int
    phash: str
    pdq: str
    pdq_quality: int


@dataclass(frozen=True, slots=True)
class MediaHashes:
    """Everything the hotline keeps of one fetched file (no byte of it).

    Hex strings are lowercase. ``phash`` is ``str(imagehash.phash(...))``: 64 bits,
    row-major over the 8x8 DCT block, first bit = most significant bit of the first
    hex digit. ``pdq`` is the canonical PDQ text (ThreatExchange ``Hash256::format``):
    256 bits, first bit = most significant bit of the first hex digit. An image whose
    pixels could not be decoded has ``kind == "image"`` and ``phash is None``.
    """

    sha256: str
    sha1: str
    md5: str
    mime: str
    kind: Kind
    size: int
    width: int | None
    height: int | None
    frames: int | None
    phash: str | None
    pdq: str | None
    pdq_quality: int | None
    frames_capped: bool = False
    # Why the file is not hashed in full (``Note``); None when it is.
    note: Note | None = None
    # Later frames of an animation, each differing from the first and from one another.
    frame_hashes: tuple[FrameHashes, ...] = ()


class HashingError(HotlineError):
    """A file that is not hashed (fully): ``reason`` says why.

    ``partial`` holds what was computed before stopping, for an image refused for its
    size: the cryptographic hashes, type and (when Pillow read them) dimensions, so
    that exact-hash lists can still be consulted. The message is fixed per reason.
    """

    code = "hashing_failed"
    status_code = 422

    def __init__(self, reason: Reason, *, partial: MediaHashes | None = None) -> None:
        self.reason: Reason = reason
        self.partial = partial
        super().__init__(_DETAILS[reason])


# ---------------------------------------------------------------- sniffing

_WHITESPACE: Final = b" \t\n\r\x0c"
_TAG_END: Final = frozenset(b" \t\n\r\x0c>")
_HTML_OPENINGS: Final = tuple(
    tag.encode()
    for tag in (
        "<!doctype html",
        "<html",
        "<head",
        "<body",
        "<script",
        "<iframe",
        "<h1",
        "<div",
        "<font",
        "<table",
        "<a",
        "<style",
        "<title",
        "<b",
        "<br",
        "<p",
        "<meta",
        "<link",
        "<!--",
    )
)
_MARKUP_HEAD: Final = 65536  # how far an SVG's prolog (comments, doctype) is followed
_AUDIO_BRANDS: Final = frozenset({b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "})
_STILL_BRANDS: Final = frozenset(  # HEIF/AVIF stills: not a type handled here
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
)
_MP4_BRANDS: Final = frozenset(
    {b"isom", b"mp41", b"mp42", b"mp71", b"avc1", b"M4V ", b"M4VH", b"M4VP", b"dash"}
    | {b"f4v ", b"mmp4", b"MSNV", b"XAVC", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6"}
    # ISO BMFF revisions, DASH segments and CMAF (what HLS and DASH players get).
    | {b"iso7", b"iso8", b"iso9", b"msdh", b"msix", b"cmfc", b"cmf2", b"cmfs", b"cmff"}
    | {b"cmfl", b"cmfh"}
)
# QuickTime files from before "ftyp" (1990s to early 2000s cameras and editors) open
# with one of these atoms; "wide", "free", "skip" only pad, so the atom after them must
# be one too.
_QT_ATOMS: Final = frozenset({b"moov", b"mdat", b"pnot"})
_QT_PADDING: Final = frozenset({b"wide", b"free", b"skip"})
_ASF_GUID: Final = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_BMP_HEADER_SIZES: Final = frozenset({12, 16, 40, 52, 56, 64, 108, 124})


def sniff(data: bytes) -> str | None:
    """The MIME type the leading bytes of ``data`` announce, or ``None``.

    Images, SVG/EPS, videos and HTML are recognised; everything else is ``None``.
    """
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data.startswith(b"RIFF") and len(data) >= 12:
        return {b"WEBP": "image/webp", b"AVI ": "video/x-msvideo"}.get(data[8:12])
    if data.startswith(b"BM") and len(data) >= 18:
        (header_size,) = struct.unpack_from("<I", data, 14)
        return "image/bmp" if header_size in _BMP_HEADER_SIZES else None
    if data.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        return "application/postscript"
    if data[4:8] == b"ftyp":
        return _sniff_iso_media(data)
    if data[4:8] in _QT_ATOMS or data[4:8] in _QT_PADDING:
        return _sniff_old_quicktime(data)
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if _ebml_doctype(data) == b"webm" else "video/x-matroska"
    if data.startswith(b"FLV\x01"):
        return "video/x-flv"
    if data.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        return "video/mpeg"
    if data.startswith(_ASF_GUID):
        return "video/x-ms-asf"
    if len(data) > 376 and data[0] == data[188] == data[376] == 0x47:
        return "video/mp2t"
    if len(data) > 388 and data[4] == data[196] == data[388] == 0x47:
        return "video/mp2t"  # BDAV (.m2ts, .mts): each packet after a 4-byte timestamp
    return _sniff_markup(data)


def is_media(mime: str | None) -> bool:
    """Whether :func:`hash_media` hashes this type (images, SVG/EPS, videos)."""
    return mime in _KINDS


_HTML_TYPES: Final = frozenset({"text/html", "application/xhtml+xml"})


def declared_html(content_type: str | None) -> bool:
    """Whether a Content-Type header says HTML (or XHTML)."""
    return (content_type or "").split(";", 1)[0].strip().lower() in _HTML_TYPES


def is_page(head: bytes, content_type: str | None) -> bool:
    """Whether a body past the cap is a page, read then in its first part: a page
    padded after its content (a kilobyte of gzip can carry 25 MB of spaces) would
    otherwise hide every link."""
    mime = sniff(head)
    return mime == "text/html" or (mime is None and declared_html(content_type))


def _sniff_iso_media(data: bytes) -> str | None:
    (box_size,) = struct.unpack_from(">I", data, 0)
    major = data[8:12]
    brands = [major] + [data[at : at + 4] for at in range(16, min(box_size, len(data), 256) - 3, 4)]
    if major == b"qt  ":
        return "video/quicktime"
    if major in _AUDIO_BRANDS or major in _STILL_BRANDS:
        return None
    if major.startswith(b"3g2"):
        return "video/3gpp2"
    if major.startswith(b"3gp"):
        return "video/3gpp"
    if any(brand in _MP4_BRANDS for brand in brands):
        return "video/mp4"
    return None


def _sniff_old_quicktime(data: bytes) -> str | None:
    at = 0
    for _ in range(4):  # a few padding atoms at most
        if len(data) < at + 8:
            return None
        (size,) = struct.unpack_from(">I", data, at)
        kind = data[at + 4 : at + 8]
        if kind in _QT_ATOMS:
            # 0: to the end of the file; 1: a 64-bit size follows (a large "mdat").
            return "video/quicktime" if size in (0, 1) or size >= 8 else None
        if kind not in _QT_PADDING or size < 8:
            return None
        at += size
    return None


def _ebml_doctype(data: bytes) -> bytes | None:
    """The DocType of an EBML header (webm, matroska), read from its first bytes."""
    at = data.find(b"\x42\x82", 4, 64)
    if at < 0 or at + 2 >= len(data):
        return None
    first = data[at + 2]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        return None
    value = first & (0xFF >> length)
    for byte in data[at + 3 : at + 2 + length]:
        value = value << 8 | byte
    start = at + 2 + length
    return data[start : start + min(value, 32)].rstrip(b"\x00").lower()


def _sniff_markup(data: bytes) -> str | None:
    head = data[:_MARKUP_HEAD]
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    elif head.startswith((b"\xff\xfe", b"\xfe\xff")):
        # UTF-16 with its byte order mark: looked at as UTF-8 (markup is ASCII).
        head = head[:2048].decode("utf-16", "ignore").encode("utf-8", "ignore")
    head = head.lstrip(_WHITESPACE)
    if not head.startswith(b"<"):
        return None
    if _first_element_is_svg(head):
        return "image/svg+xml"
    return "text/html" if _looks_like_html(head) or _looks_like_html(_skip_prolog(head)) else None


def _looks_like_html(head: bytes) -> bool:
    lowered = head[:16].lower()
    return any(
        lowered.startswith(opening)
        and len(lowered) > len(opening)
        and lowered[len(opening)] in _TAG_END
        for opening in _HTML_OPENINGS
    )


def _skip_prolog(head: bytes) -> bytes:
    """``head`` after an XML declaration, processing instructions, comments, a doctype."""
    for _ in range(64):
        lowered = head[:9].lower()
        if head.startswith(b"<?"):
            end = head.find(b"?>")
            head = head[end + 2 :] if end >= 0 else b""
        elif head.startswith(b"<!--"):
            end = head.find(b"-->", 4)
            head = head[end + 3 :] if end >= 0 else b""
        elif lowered == b"<!doctype" and not head[:14].lower().startswith(b"<!doctype html"):
            subset = head.find(b"[")
            close = head.find(b">")
            if 0 <= subset < close:
                close = head.find(b">", head.find(b"]", subset))
            head = head[close + 1 :] if close >= 0 else b""
        else:
            return head
        head = head.lstrip(_WHITESPACE)
    return head


def _first_element_is_svg(head: bytes) -> bool:
    rest = _skip_prolog(head)
    for name in (b"<svg", b"<svg:svg"):
        if rest[: len(name)].lower() == name and rest[len(name) : len(name) + 1] in (
            b" ",
            b"\t",
            b"\n",
            b"\r",
            b">",
            b"/",
        ):
            return True
    return False


# ---------------------------------------------------------------- hashing


def hash_media(
    data: bytes,
    *,
    max_pixels: int = 100_000_000,
    max_frames: int = 20,
    hashed_frames: int = 8,
) -> MediaHashes:
    """SHA-256, SHA-1, MD5 of ``data``, and for images dimensions, frames, pHash and PDQ.

    Raises :class:`HashingError` ``not_media`` for anything :func:`is_media` refuses
    (HTML included) and ``image_too_large`` for an image with more than ``max_pixels``
    pixels (from its header, before decoding; ``partial`` carries the cryptographic
    hashes). An image whose pixels cannot be decoded (truncated, corrupt) is returned
    with ``phash``, ``pdq`` and ``pdq_quality`` ``None``. Frames of an animation are
    counted up to ``max_frames``; besides the first, up to ``hashed_frames - 1`` of them,
    spread over those counted, are hashed into ``frame_hashes`` (see
    :func:`frames_to_hash` for the pixel budget). No side effects.
    """
    if max_frames < 1:
        raise ValueError("max_frames must be at least 1")
    if hashed_frames < 1:
        raise ValueError("hashed_frames must be at least 1")
    mime = sniff(data)
    kind = _KINDS.get(mime) if mime is not None else None
    if mime is None or kind is None:
        raise HashingError("not_media")
    hashes = MediaHashes(
        sha256=hashlib.sha256(data).hexdigest(),
        sha1=hashlib.sha1(data, usedforsecurity=False).hexdigest(),
        md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
        mime=mime,
        kind=kind,
        size=len(data),
        width=None,
        height=None,
        frames=None,
        phash=None,
        pdq=None,
        pdq_quality=None,
    )
    if kind != "image":
        return hashes
    return _hash_image(
        data, hashes, max_pixels=max_pixels, max_frames=max_frames, hashed_frames=hashed_frames
    )


# What Pillow raises on hostile or broken files (UnidentifiedImageError is an OSError;
# plugins also fail with struct.error, IndexError, asserts...). Anything else, such as
# Celery's SoftTimeLimitExceeded arriving mid-decode, propagates.
_DECODE_ERRORS: Final = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
    ArithmeticError,
    AssertionError,
    RuntimeError,
    MemoryError,
)


@dataclass(slots=True)
class _Decoded:
    # Image.open returned: Pillow accepted every chunk or segment before the pixels.
    header_read: bool = False
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    frames_capped: bool = False
    too_large: bool = False
    undecodable: bool = False
    phash: str | None = None
    pdq: str | None = None
    pdq_quality: int | None = None
    later: list[FrameHashes] = field(default_factory=list)
    # What turns the stored pixels into the picture as shown (its EXIF orientation).
    turn: Image.Transpose | None = None


def _hash_image(
    data: bytes, hashes: MediaHashes, *, max_pixels: int, max_frames: int, hashed_frames: int
) -> MediaHashes:
    limits = {"max_pixels": max_pixels, "max_frames": max_frames, "hashed_frames": hashed_frames}
    # The file hashes stay those of the bytes received.
    out = decode_as_shown(data, hashes.mime, lambda bytes_: _decode(bytes_, hashes.mime, **limits))
    if out.too_large:
        raise HashingError(
            "image_too_large",
            partial=replace(hashes, width=out.width, height=out.height, note="image_too_large"),
        )
    note: Note | None = (
        "decode_error" if out.undecodable else "frames_capped" if out.frames_capped else None
    )
    return replace(
        hashes,
        width=out.width,
        height=out.height,
        frames=out.frames,
        frames_capped=out.frames_capped,
        note=note,
        phash=out.phash,
        pdq=out.pdq,
        pdq_quality=out.pdq_quality,
        frame_hashes=tuple(out.later),
    )


# What decoding a picture costs, in pixels of ``max_pixels``: Pillow decodes every WebP
# through libwebp's animation decoder, 16 bytes a pixel against about 6 for PNG (two
# RGBA canvases, and two copies of the frame), so a WebP counts three times: the
# largest one allowed costs about what the largest PNG does (500 MB, not 1.5 GB).
_PIXEL_WEIGHT: Final = {"image/webp": 3}


def decoded_pixels(mime: str, width: int, height: int) -> int:
    """The pixels a picture counts for against ``max_pixels``."""
    return width * height * _PIXEL_WEIGHT.get(mime, 1)


class DecodeAttempt(Protocol):
    """What an attempt at decoding tells: whether Pillow opened the file, and whether it
    refused its pixels (undecodable) or its size (too large)."""

    @property
    def header_read(self) -> bool: ...
    @property
    def undecodable(self) -> bool: ...
    @property
    def too_large(self) -> bool: ...


Attempt = TypeVar("Attempt", bound=DecodeAttempt)


def decode_as_shown(data: bytes, mime: str, decode: Callable[[bytes], Attempt]) -> Attempt:
    """``decode`` applied to the file as browsers read it (hashing and the safe view):
    a JPEG without its end marker with one, and a file Pillow refuses over a broken
    optional part that browsers skip once more from one copy without it; a file flooded
    with optional parts read without most of them; a PNG without the tRNS and eXIf
    browsers do not read (``_ReadOnce``)."""
    data = _without_flood(data, mime)
    out = decode(_with_end_marker(data, mime))
    if out.undecodable:
        repaired = _without_broken_optional_parts(data, mime, header_read=out.header_read)
        if repaired is not None:
            again = decode(repaired)
            if again.header_read or again.too_large:  # it got at least as far
                out = again
    return out


def _decode(
    data: bytes, mime: str, *, max_pixels: int, max_frames: int, hashed_frames: int
) -> _Decoded:
    """Open ``data`` with the one plugin ``mime`` names and hash its frames; what Pillow
    raises on broken files is absorbed into the flags of the result."""
    out = _Decoded()
    try:
        with Image.open(io.BytesIO(data), formats=_PIL_FORMATS[mime]) as img:
            out.header_read = True
            out.width, out.height = img.size
            orientation = _orientation(img)
            out.turn = _ORIENTATIONS.get(orientation)
            if orientation in _QUARTER_TURNS:  # the size as shown, as hashed
                out.width, out.height = out.height, out.width
            if decoded_pixels(mime, out.width, out.height) > max_pixels:
                out.too_large = True
            else:
                count = _count_frames(img, data, limit=max_frames)
                out.frames, out.frames_capped = min(count, max_frames), count > max_frames
                out.phash, out.pdq, out.pdq_quality = _perceptual(img, out.turn)
                if img.format in ANIMATED_FORMATS:
                    wanted = frames_to_hash(out.frames, hashed=hashed_frames)
                    if wanted:
                        _hash_later_frames(img, wanted, out, budget=max_pixels)
    except Image.DecompressionBombError:
        out.too_large = True  # Pillow's own limit (2 x Image.MAX_IMAGE_PIXELS) came first
    except _DECODE_ERRORS:  # undecodable pixels; the other hashes stand
        out.undecodable = True
    # The caller raises outside any except block, so no Pillow exception is attached.
    return out


_JPEG_END: Final = b"\xff\xd9"


def _with_end_marker(data: bytes, mime: str) -> bytes:
    if mime == "image/jpeg" and not data.endswith(_JPEG_END):
        # A JPEG without its end marker (cut short in transfer, or on purpose) decodes
        # as browsers show it.
        return data + _JPEG_END
    return data


def _without_broken_optional_parts(data: bytes, mime: str, *, header_read: bool) -> bytes | None:
    """A copy of ``data`` without the optional parts Pillow may refuse and browsers skip,
    or None when there are none (so a retry would fail alike)."""
    if mime == "image/png":
        return _png_without_ancillary_chunks(data, after_image_data=header_read)
    if mime == "image/jpeg" and not header_read:  # Pillow reads segments while opening
        return _jpeg_with_short_segments_renamed(data)
    return None


# PNG (RFC 2083, W3C PNG 3rd ed.): after the signature, chunks of a 4-byte length, a
# 4-letter type, the data and a 4-byte CRC. A type whose first letter is lower-case is
# ancillary: decoders may ignore it, and browsers skip one that is broken. Pillow has no
# switch for that per file (ImageFile.LOAD_TRUNCATED_IMAGES is process-wide and also
# passes cut-short pixel data and IHDR), so the chunks are walked here.
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_PNG_CHUNK: Final = struct.Struct(">I4s")  # length, type
# APNG's chunks are ancillary but carry the later frames and where they go.
_APNG_CHUNKS: Final = frozenset({b"acTL", b"fcTL", b"fdAT"})

# JPEG segments with a fixed header of their own (marker: identifier, bytes of data the
# header takes): libjpeg, which decodes the pixels, ignores one shorter than that
# header, as browsers do; Pillow's header parser refuses the file instead.
_JPEG_FIXED_HEADERS: Final = {
    0xE0: (b"JFIF", 14),  # APP0 JFIF: version, density units, densities, thumbnail size
    0xE2: (b"ICC_PROFILE\x00", 14),  # APP2 ICC profile: identifier, sequence, count
    0xEE: (b"Adobe", 12),  # APP14 Adobe: version, flags, colour transform
}
_JPEG_IGNORED: Final = b"\xef"  # APP15: a segment neither Pillow nor libjpeg reads
# Markers Pillow's header parser takes without a length (0x00 follows a stuffed 0xFF).
_JPEG_NO_LENGTH: Final = frozenset({0x00, 0xC8, *range(0xD0, 0xDA), *range(0xF0, 0xFE)})
_JPEG_SEGMENT: Final = struct.Struct(">BBH")  # 0xFF, marker, length
# What Pillow's parser steps over between segments: stray bytes, fill bytes (an 0xFF
# before another) and markers without a length. A run of any mix of them is matched at
# once (24 MB of fill bytes took the walk 5.7 s a byte at a time, and 25 MB of
# alternating stray bytes and stuffed zeros 13 s a run at a time). Possessive: a plain
# + kept a backtracking entry per step, 1.4 GB for 12 million of them.
_JPEG_STEPS: Final = re.compile(
    rb"(?:[^\xff]++|\xff(?=\xff)|\xff[" + re.escape(bytes(sorted(_JPEG_NO_LENGTH))) + rb"])++"
)
# What libjpeg skips as well before the first scan: stray bytes, fill bytes, a stuffed
# 0x00, restart markers. (A run ends before the 0xFF of a marker: its last fill byte is
# one before the end.) A second SOI, an EOI or a reserved marker stop libjpeg: a run
# holding one is kept up to the first of them, which the file then fails at as before.
_JPEG_SKIPPED_ALIKE: Final = re.compile(rb"(?:[^\xff]++|\xff(?=\xff|\Z)|\xff[\x00\xd0-\xd7])*+")

# More optional parts than pictures have (a PNG's text and metadata chunks, a JPEG's
# comment and application segments: tens at most). Pillow's header parsers read each
# in Python, and keep a JPEG's: a 25 MB file of millions of empty ones took 4 to 7 s
# and 230 to 770 MB, where browsers skip them in C. Past this many (or past
# ``_FLOOD_BYTES`` of what a JPEG's parser steps over) the file is decoded from a copy
# without them (``test_a_png_flooded_with_chunks_…``,
# ``test_a_jpeg_flooded_with_segments_…``).
_FLOOD: Final = 1_000
_FLOOD_BYTES: Final = 1 << 16
# The ancillary chunks a flooded PNG keeps, those browsers read (``_ReadOnce``):
# transparency (a picture may be drawn in it) and EXIF (its orientation); and APNG's,
# which carry frames.
_PNG_KEPT_ONCE: Final = frozenset({b"tRNS", b"eXIf"})
# The segments a flooded JPEG keeps: the first EXIF (APP1), the orientation, which
# Pillow and browsers take from the first; and the last whole JFIF (APP0) and Adobe
# (APP14), which tell libjpeg the colour transform: it takes the last one at least as
# long as its header (identifier, bytes of data), and a decoy kept in its place before
# turned the colours (``test_a_flooded_jpeg_keeps_the_adobe_segment_libjpeg_reads``).
# The others (comments, XMP, ICC, Photoshop, maker data …) change no pixel.
_JPEG_KEPT_FIRST: Final = {0xE1: b"Exif\x00\x00"}
_JPEG_KEPT_LAST: Final = {0xE0: (b"JFIF\x00", 14), 0xEE: (b"Adobe", 12)}
_JPEG_OPTIONAL: Final = frozenset({*range(0xE0, 0xF0), 0xFE})  # APP0 to APP15, COM


def _png_chunks(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(start, end, type) of a PNG's chunks, in order, up to ``IEND`` or to anything
    that is not a whole chunk header (a type of other than letters); ``end`` lies past
    the end of a chunk cut short."""
    size, pos = len(data), len(_PNG_SIGNATURE)
    while pos + 8 <= size:
        length, kind = _PNG_CHUNK.unpack_from(data, pos)
        if not kind.isalpha():
            return
        end = pos + 12 + length
        yield pos, end, kind
        if end >= size or kind == b"IEND":
            return
        pos = end


def _optional_png_chunk(kind: bytes) -> bool:
    return bool(kind[0] & 0x20) and kind not in _APNG_CHUNKS


def _jpeg_parts(data: bytes) -> Iterator[tuple[int, int, int | None]]:
    """(start, end, marker) of what precedes a JPEG's first scan, walked as Pillow's
    header parser walks it: its segments (0xFF, a marker byte, a 2-byte length counting
    itself, the data), and with a marker of None the runs it steps over (any mix of
    stray bytes, fill bytes and markers without a length). ``end`` lies past the end of
    a segment cut short. The walk stops at the first scan (Pillow's parser stops there),
    at a length under 2, or where no segment follows."""
    size, pos = len(data), 2
    while pos + 4 <= size:
        byte, marker, length = _JPEG_SEGMENT.unpack_from(data, pos)
        if byte != 0xFF or marker == 0xFF or marker in _JPEG_NO_LENGTH:
            steps = _JPEG_STEPS.match(data, pos)
            end = steps.end() if steps else pos + 1  # (it always matches here)
            if end >= size:
                return
            yield pos, end, None
        elif marker == 0xDA or length < 2:
            return
        else:
            end = pos + 2 + length
            yield pos, end, marker
        pos = end


class _Edited:
    """A copy of ``data`` with spans left out or replaced, written as a walk goes from
    the start to the end (no list of the spans: a file can hold millions)."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._size = len(data)
        self._copy = io.BytesIO()
        self._kept_from = 0
        self.edited = False

    def replace(self, start: int, end: int, by: bytes = b"") -> None:
        """``data[start:end]`` (clipped to the file) becomes ``by``."""
        if self._kept_from < start:
            self._copy.write(self._view[self._kept_from : start])
        if by:
            self._copy.write(by)
        self._kept_from = max(self._kept_from, min(end, self._size))
        self.edited = True

    def value(self, tail: bytes = b"") -> bytes:
        self._copy.write(self._view[self._kept_from :])
        self._copy.write(tail)
        return self._copy.getvalue()  # the buffer itself, not a second copy


def _png_without_ancillary_chunks(data: bytes, *, after_image_data: bool) -> bytes | None:
    """``data`` without its ancillary chunks but APNG's and the ``tRNS`` and ``eXIf``
    browsers read (``_ReadOnce``) (only those after the first IDAT if
    ``after_image_data``: Pillow reads and checks the others while opening), or None
    when there is none.

    None of them changes the luma hashed here: text, colour space and gamma (not applied),
    physical size. Transparency (a picture may be drawn in it) and EXIF (its orientation)
    do, so the first of each that Pillow accepts stays. APNG's chunks stay too, unless
    one of them is broken: then all go, and the file is the static picture it holds for
    decoders without APNG, which is what browsers show of an APNG whose animation they
    cannot read (Pillow refused the whole file over a broken acTL or first fcTL). The
    walk stops at IEND or at anything that is not a whole chunk, and the rest is kept as
    it is (a broken critical chunk stays for Pillow to refuse), unless it is an
    ancillary chunk cut short.
    """
    copy = _Edited(data)
    dropping = not after_image_data
    colour = _png_colour(data)
    static = any(
        kind in _APNG_CHUNKS and not _sound(data, start, end, kind, colour)
        for start, end, kind in _png_chunks(data)
    )
    read = _ReadOnce(data)
    for start, end, kind in _png_chunks(data):
        kept = read(start, end, kind)  # asked of every chunk: it follows the order
        dropping = dropping or kind == b"IDAT"
        if kept or not dropping or not kind[0] & 0x20:  # read, before the drop, or critical
            continue
        if kind not in _APNG_CHUNKS or static:
            copy.replace(start, end)
    return copy.value() if copy.edited else None


# The least a tRNS chunk holds for Pillow, by colour type (greyscale: one 16-bit grey,
# truecolour: three): Pillow refuses a shorter one; one entry for a palette.
_TRNS_LENGTH: Final = {0: 2, 2: 6}
# APNG's chunks: (least, most) bytes of data (acTL: frames, plays; fcTL: sequence,
# size, offset, delay, disposal, blending; fdAT: sequence, then image data).
_APNG_LENGTHS: Final = {b"acTL": (8, 8), b"fcTL": (26, 26), b"fdAT": (4, 1 << 31)}


def _png_colour(data: bytes) -> int | None:
    """The colour type of a PNG (its IHDR's tenth byte), None without an IHDR first."""
    return data[25] if data[12:16] == b"IHDR" and len(data) > 25 else None


def _sound(data: bytes, start: int, end: int, kind: bytes, colour: int | None) -> bool:
    """Whether the chunk at ``start`` (tRNS, eXIf, or APNG's) is one Pillow takes:
    whole, its CRC right, as long as its kind (a tRNS: its colour type) needs."""
    if end > len(data):
        return False
    view = memoryview(data)
    if zlib.crc32(view[start + 4 : end - 4]) != int.from_bytes(view[end - 4 : end], "big"):
        return False
    length = end - start - 12
    if kind == b"tRNS":
        return length >= _TRNS_LENGTH.get(colour if colour is not None else 3, 1)
    least, most = _APNG_LENGTHS.get(kind, (0, 1 << 31))
    return least <= length <= most


def _jpeg_with_short_segments_renamed(data: bytes) -> bytes | None:
    """``data`` (with an end marker) with each segment of ``_JPEG_FIXED_HEADERS`` that
    is shorter than its header renamed APP15, or None when there is none.

    Renaming keeps every offset and length, and the pixels are libjpeg's decoding of
    the same bytes.
    """
    copy = _Edited(data)
    for start, _, marker in _jpeg_parts(data):
        fixed = _JPEG_FIXED_HEADERS.get(marker) if marker is not None else None
        if fixed is None:
            continue
        (length,) = struct.unpack_from(">H", data, start + 2)
        if length - 2 < fixed[1] and data.startswith(fixed[0], start + 4):
            copy.replace(start + 1, start + 2, _JPEG_IGNORED)
    if not copy.edited:
        return None
    return copy.value(b"" if data.endswith(_JPEG_END) else _JPEG_END)


def _without_flood(data: bytes, mime: str) -> bytes:
    if mime == "image/png":
        # The flood copy leaves out the tRNS and eXIf browsers do not read as well.
        return _png_without_chunk_flood(data) or _png_without_unread_chunks(data) or data
    if mime == "image/jpeg":
        return _jpeg_without_segment_flood(data) or data
    return data


def _png_flooded(data: bytes) -> bool:
    """Whether the PNG has more than ``_FLOOD`` ancillary chunks (APNG's not counted)."""
    optional = (kind for _, _, kind in _png_chunks(data) if _optional_png_chunk(kind))
    return next(itertools.islice(optional, _FLOOD, None), None) is not None


def _png_without_chunk_flood(data: bytes) -> bytes | None:
    """A flooded PNG without its ancillary chunks but APNG's and the ``tRNS`` and
    ``eXIf`` browsers read (``_ReadOnce``), before and after the image data (Pillow
    reads both); None if it is not flooded."""
    if not _png_flooded(data):
        return None
    copy = _Edited(data)
    read = _ReadOnce(data)
    for start, end, kind in _png_chunks(data):
        if not read(start, end, kind) and _optional_png_chunk(kind):
            copy.replace(start, end)
    return copy.value()


class _ReadOnce:
    """Asked of every chunk of a PNG in order, whether it is a ``tRNS`` or ``eXIf`` that
    browsers read: the first sound one of each before the image data (libpng skips a
    broken one, ignores a second, and one after the pixels). Pillow reads every one, the
    last winning, those after the pixels too once it has decoded them: a second tRNS
    made a picture drawn in transparency hash as a blank, a second eXIf turned it."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._colour = _png_colour(data)
        self._found: set[bytes] = set()
        self._image_data = False

    def __call__(self, start: int, end: int, kind: bytes) -> bool:
        self._image_data = self._image_data or kind == b"IDAT"
        if self._image_data or kind not in _PNG_KEPT_ONCE or kind in self._found:
            return False
        if not _sound(self._data, start, end, kind, self._colour):
            return False
        self._found.add(kind)
        return True


def _png_without_unread_chunks(data: bytes) -> bytes | None:
    """``data`` without the ``tRNS`` and ``eXIf`` chunks browsers do not read
    (``_ReadOnce``), or None when there is none."""
    if b"tRNS" not in data and b"eXIf" not in data:  # most files, found at C speed
        return None
    copy = _Edited(data)
    read = _ReadOnce(data)
    for start, end, kind in _png_chunks(data):
        if not read(start, end, kind) and kind in _PNG_KEPT_ONCE:
            copy.replace(start, end)
    return copy.value() if copy.edited else None


def _jpeg_flooded(data: bytes) -> bool:
    """Whether more than ``_FLOOD`` optional segments and runs stepped over, or more
    than ``_FLOOD_BYTES`` stepped over, precede the JPEG's first scan."""
    count = stepped = 0
    for start, end, marker in _jpeg_parts(data):
        if marker is None:
            stepped += end - start
        if marker is None or marker in _JPEG_OPTIONAL:
            count += 1
        if count > _FLOOD or stepped > _FLOOD_BYTES:
            return True
    return False


def _jpeg_without_segment_flood(data: bytes) -> bytes | None:
    """A flooded JPEG without what precedes its first scan but its segments that
    matter: not the runs its parser steps over that libjpeg skips too (fill bytes, stray
    bytes …), nor its optional segments but the first of ``_JPEG_KEPT_FIRST`` and the
    last of each of ``_JPEG_KEPT_LAST`` (written where the walk stops, before the scan:
    libjpeg and Pillow read them anywhere before it); None if it is not flooded. The
    pixels are libjpeg's decoding of the same tables and scans."""
    if not _jpeg_flooded(data):
        return None
    copy = _Edited(data)
    kept: set[int] = set()
    last: dict[int, bytes] = {}
    size, stop = len(data), 2
    for start, stop, marker in _jpeg_parts(data):
        if marker is None:
            alike = _JPEG_SKIPPED_ALIKE.match(data, start, stop)
            skipped = alike.end() if alike else start
            copy.replace(start, skipped)
            if skipped < stop:  # a marker that stops libjpeg: kept, the rest not read
                copy.replace(skipped + 2, stop)
            continue
        if marker not in _JPEG_OPTIONAL:
            continue
        if marker in _JPEG_KEPT_FIRST:
            if marker not in kept and data.startswith(_JPEG_KEPT_FIRST[marker], start + 4):
                kept.add(marker)
                continue
        elif marker in _JPEG_KEPT_LAST and stop <= size:
            ident, header = _JPEG_KEPT_LAST[marker]
            if stop - start - 4 >= header and data.startswith(ident, start + 4):
                last[marker] = data[start:stop]
        copy.replace(start, stop)
    stop = min(stop, size)
    copy.replace(stop, stop, b"".join(last.values()))
    return copy.value()


def frames_to_hash(frames: int, *, hashed: int) -> list[int]:
    """The later frames of an animation to hash: up to ``hashed - 1`` of frames 1 to the
    last counted, spread evenly, the last always among them (``walk_frames`` may stop
    before it)."""
    last = frames - 1
    count = min(hashed - 1, last)
    if count < 1:
        return []
    if count == 1:
        return [last]
    return sorted({1 + round(i * (last - 1) / (count - 1)) for i in range(count)})


def walk_frames(img: Image.Image, last: int, budget: int) -> Iterator[int]:
    """Seek an animation frame by frame, from 1 to ``last``, yielding each frame number
    once it is the current frame, while the pixels decoded on the way stay within
    ``budget``.

    Seeking to a frame decodes the frames before it (a GIF frame is drawn over the
    last), and a later frame may be larger than the first (a GIF's canvas grows to
    hold it). So each frame's size is counted once its header is read, before its
    pixels are, and the walk ends before the frame that would go over the budget.
    Pillow's decompression-bomb error, ``EOFError`` past the last frame and decode
    errors propagate to the caller."""
    spent = 0
    for frame in range(1, last + 1):
        img.seek(frame)
        width, height = img.size
        spent += width * height
        if spent > budget:
            return
        yield frame


def _hash_later_frames(
    img: ImageFile.ImageFile, wanted: list[int], out: _Decoded, *, budget: int
) -> None:
    """Hash the ``wanted`` frames into ``out.later``, leaving out any that hashes like
    the first or an earlier one, within ``budget`` decoded pixels (``walk_frames``).
    A frame that does not decode, or that Pillow takes for a decompression bomb, ends
    the walk; what was hashed stands (the first frame decoded, so the item is neither
    undecodable nor too large: a crafted last frame must not hide the first)."""
    seen = {(out.phash, out.pdq)}
    chosen = set(wanted)
    try:
        for frame in walk_frames(img, wanted[-1], budget):
            if frame not in chosen:
                continue
            phash, pdq, quality = _perceptual(img, out.turn)
            if (phash, pdq) not in seen:
                seen.add((phash, pdq))
                out.later.append(FrameHashes(frame, phash, pdq, quality))
    except (Image.DecompressionBombError, *_DECODE_ERRORS):
        return


def _count_frames(img: Image.Image, data: bytes, *, limit: int) -> int:
    """Frames in the file, counted up to ``limit + 1`` (enough to know it is capped);
    at least 1, the first, which was decoded."""
    if img.format == "GIF":
        # Pillow's n_frames walks every frame of a GIF; a 100,000-frame file would
        # cost a second. The block structure is walked here only as far as needed.
        return max(1, _gif_frames(data, limit + 1))
    claimed = int(getattr(img, "n_frames", 1))
    if img.format == "PNG" and claimed > 1:
        # acTL states a count that nothing holds it to (2**31 - 1 for one frame): the
        # frames are those that have a frame control chunk.
        return max(1, min(claimed, _apng_frames(data, limit + 1)))
    # WebP (counted by libwebp's demuxer) and MPO (its index) count what they hold.
    return max(1, claimed)


def _gif_frames(data: bytes, limit: int) -> int:
    size = len(data)
    if size < 13:
        return 0
    pos = 13
    if data[10] & 0x80:
        pos += 3 * (2 << (data[10] & 7))
    count = 0
    while pos < size and count < limit:
        block = data[pos]
        if block == 0x21:  # extension: label, then sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image descriptor
            count += 1
            if pos + 10 > size:
                break
            packed = data[pos + 9]
            pos += 10
            if packed & 0x80:
                pos += 3 * (2 << (packed & 7))
            pos = _skip_sub_blocks(data, pos + 1)  # after the LZW minimum code size
        elif block == 0x3B:  # trailer
            break
        else:  # a stray byte: Pillow (and browsers) read on past it
            pos += 1
    return count


def _apng_frames(data: bytes, limit: int) -> int:
    """The frame control chunks (``fcTL``) of a PNG, counted up to ``limit``."""
    size = len(data)
    pos, count = 8, 0
    while pos + 8 <= size and count < limit:
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"fcTL":
            count += 1
        elif kind == b"IEND":
            break
        pos += 12 + length
    return count


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    size = len(data)
    while pos < size:
        length = data[pos]
        pos += 1 + length
        if length == 0:
            break
    return pos


def _perceptual(img: ImageFile.ImageFile, turn: Image.Transpose | None) -> tuple[str, str, int]:
    """pHash, PDQ and PDQ quality of the current frame, from one greyscale working image.

    Both hashes depend on luma only (ITU-R 601: 0.299 R + 0.587 G + 0.114 B, which is
    also JPEG's Y channel), so colour JPEGs are decoded to Y alone, at 1/2, 1/4 or 1/8
    scale by libjpeg's DCT scaling, and no RGB image is ever built.
    """
    img.draft("L", (WORKING_SIZE, WORKING_SIZE))  # JPEG only; a no-op for other formats
    img.load()
    luma = _luma(img)
    # Other formats are reduced by the factor JPEG's draft would have chosen (1/2, 1/4
    # or 1/8), so that a picture hashes alike whichever format it came in.
    factor = min(luma.size) // WORKING_SIZE
    if factor >= 2:
        luma = luma.reduce(1 << min(3, factor.bit_length() - 1))
    # A long thin picture (100,000 x 1,000) keeps its short side: each long side is
    # then box-reduced on its own to at most _LONGEST, which pHash (32 x 32) and PDQ
    # (64 x 64) shrink far below anyway. PDQ over the full strip took 2.8 GB and 10 s.
    width, height = luma.size
    if max(width, height) > _LONGEST:
        luma = luma.reduce((-(-width // _LONGEST), -(-height // _LONGEST)))
    if turn is not None:
        luma = luma.transpose(turn)
    phash = str(imagehash.phash(luma))
    grey = np.asarray(luma, dtype=np.uint8)
    # pdqhash takes RGB; R = G = B = Y gives back Y as its luma.
    bits, quality = pdqhash.compute(np.repeat(grey[:, :, np.newaxis], 3, axis=2))
    pdq = np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()
    return phash, pdq, int(quality)


# EXIF orientation -> what turns the stored pixels into the picture as shown (the
# mapping of ImageOps.exif_transpose).
_ORIENTATIONS: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# The orientations that swap the picture's width and height.
_QUARTER_TURNS: Final = frozenset({5, 6, 7, 8})
_ORIENTATION_TAG: Final = 0x0112


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1 to 8) of the picture, 1 when absent or unreadable.

    Hashed as shown: browsers turn the picture by it (CSS ``image-orientation:
    from-image``, the default since 2020), analysts see it turned, and an image host
    that re-encodes a phone photo turns its pixels and drops the tag. Unturned, the
    phone's file and the host's copy were 20 to 36 bits of pHash apart (0 turned).

    Read from the EXIF block alone (a JPEG's first APP1 ``Exif``, a PNG's ``eXIf``, a
    WebP's ``EXIF``), as browsers read it: ``Image.getexif`` also takes an orientation
    from XMP or from a PNG's text chunks, which browsers ignore, so metadata alone
    could turn the picture hashed away from the picture shown."""
    raw = img.info.get("exif")
    if not isinstance(raw, bytes) or not raw:
        return 1
    try:
        exif = Image.Exif()
        exif.load(raw)
        value = exif.get(_ORIENTATION_TAG, 1)
    except _DECODE_ERRORS:  # a broken EXIF block: shown unturned, as browsers do
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1


def shown_upright(img: Image.Image) -> Image.Image:
    """The current frame as browsers show it: turned by its EXIF orientation (the safe
    view's, as hashing's)."""
    turn = _ORIENTATIONS.get(_orientation(img))
    return img.transpose(turn) if turn is not None else img


def _span(band: Image.Image) -> int:
    """How far the values of a single-band 8-bit image spread."""
    low, high = cast(tuple[int, int], band.getextrema())
    return high - low


# Luma or alpha whose values span no more than this is flat: it shows no picture.
_FLAT: Final = 2


def _luma(img: Image.Image) -> Image.Image:
    if img.mode == "L":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        # 16-bit and float greyscale: Pillow's convert("L") clips at 255 instead of scaling.
        values = np.asarray(img)
        scale = img.mode != "F" and values.max(initial=0) > 255
        grey = np.empty(values.shape, dtype=np.uint8)
        # In bands of rows: the whole picture as float64 took 8 bytes a pixel (2.5 GB
        # for a 10,000 x 10,000 16-bit PNG of 1.5 MB).
        for top in range(0, values.shape[0], _BAND_ROWS):
            band = values[top : top + _BAND_ROWS].astype(np.float64)
            if scale:
                band /= 257.0
            grey[top : top + _BAND_ROWS] = np.clip(band + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey)
    luma = img.convert("L")
    if img.mode in ("RGBA", "LA", "PA", "La") or "transparency" in img.info:
        return _shown_through_alpha(img, luma)
    return luma


def _shown_through_alpha(img: Image.Image, luma: Image.Image) -> Image.Image:
    """``luma``, or, when it is flat and the alpha channel is not, the picture as a
    browser shows it on a white page: a file can carry its picture in the alpha channel
    alone (every pixel black, some transparent), which without alpha hashes as a blank
    page. Alpha is dropped otherwise, as the straightforward pipeline drops it."""
    if _span(luma) > _FLAT:
        return luma
    alpha = (img if "A" in img.getbands() else img.convert("RGBA")).getchannel("A")
    if _span(alpha) <= _FLAT:
        return luma
    return Image.composite(luma, Image.new("L", luma.size, 255), alpha)
