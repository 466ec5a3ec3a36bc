"""The safe view: a media item fetched afresh and rendered for an analyst, never kept.

The analyst never visits the reported site. On request the media is fetched again
through the guarded client (`triage.fetcher`, the workers' policy), its type is taken
from the magic bytes (`triage.hashing.sniff`) and a rendering is made in memory:

- Images (JPEG, PNG, GIF and WebP, the first frame or the one asked for, BMP) are
  decoded with Pillow, opened
  only with the plugin the magic bytes name, refused above ``max_pixels`` before any
  pixel is decoded, JPEGs decoded at reduced scale (draft mode), scaled to fit
  ``size``; by default greyscale and Gaussian-blurred, on request in colour without
  blur. Either way re-encoded as a new JPEG: the original bytes never reach the
  browser, so metadata is stripped and a polyglot file loses its other face.
- SVG and EPS are never decoded: a generated placeholder says they are not shown.
- Videos: blurred, a placeholder; unblurred, the bytes under their sniffed type.
- A picture the page carried in itself (a ``data:`` URL, recorded under the page's URL
  and its SHA-256): the page is fetched again and the picture found on it by that hash.

Invariants: fetched bytes live in local variables of `render` only and are dropped
when it returns; nothing is written to a file, the database, a log or an error.
Errors carry a reason code, never the URL or a fragment of the content, and are
raised outside ``except`` blocks so no library exception rides along.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from sqlalchemy import select
from sqlmodel import Session, col

from hotline.errors import HotlineError, NotFound
from hotline.settings import Settings
from triage.errors import FetchError
from triage.extract import inline_picture, inline_sha256, media_links
from triage.fetcher import Fetcher
from triage.hashing import (
    _DECODE_ERRORS,
    _PIL_FORMATS,
    ANIMATED_FORMATS,
    decode_as_shown,
    decoded_pixels,
    is_page,
    shown_upright,
    sniff,
    walk_frames,
)
from triage.models import Media, Sighting

log = logging.getLogger("hotline.triage.safeview")

DEFAULT_SIZE: Final = 1024
MIN_SIZE: Final = 64
MAX_SIZE: Final = 2048
#: The blur radius setting is given for an image of this long side; scaled to the output.
BLUR_REFERENCE: Final = 1024

View = Literal["blurred", "unblurred", "placeholder"]
Content = Literal["same", "changed"]

_VECTOR_NAMES: Final = {"image/svg+xml": "SVG", "application/postscript": "EPS"}
# A fetch that found nothing there any more is a 404 for the analyst; any other
# failure (blocked, timeout, too large, server error) is the site's gateway failing.
_GONE: Final = frozenset({"http_error_404", "http_error_410", "no_such_frame", "inline_gone"})


class MediaNotFound(NotFound):
    detail = "This target has no media item with this id."
    page_when_opened = True


class MediaUnavailable(HotlineError):
    """The media could not be fetched or rendered again; ``reason`` is the machine code
    (the fetcher's, e.g. ``timeout``, ``blocked_address``, ``http_error_404``, or
    ``not_media``, ``image_too_large``, ``decode_error``, ``no_such_frame``, ``inline_gone``)."""

    code = "media_unavailable"
    status_code = 502
    page_when_opened = True

    def __init__(self, reason: str) -> None:
        self.reason = reason
        if reason in _GONE:
            self.status_code = 404
        # Also on its own, for the item page to say why (the detail is prose).
        self.headers = {"X-Hotline-Reason": reason}
        super().__init__(f"The media could not be fetched or shown again ({reason}).")


@dataclass(frozen=True)
class Source:
    """Where a media item of a target was seen, and what was recorded of it."""

    target_id: int
    media_id: int
    url: str
    sha256: str

    def __repr__(self) -> str:
        return f"Source(target_id={self.target_id}, media_id={self.media_id})"


@dataclass(frozen=True)
class Options:
    size: int = DEFAULT_SIZE
    """Long side of the rendering, in pixels (never larger than the image)."""
    unblur: bool = False
    blur_radius: float = 24
    max_pixels: int = 100_000_000
    frame: int = 0
    """The frame of an animation (GIF, APNG, WebP) to show: 0, the first, or a later one
    a match was found through. Reaching it decodes the frames before it: within
    ``max_pixels`` in all, and among the first ``max_frames``, as hashing counts them."""
    max_frames: int = 20

    def __post_init__(self) -> None:
        if not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ValueError(f"size must be between {MIN_SIZE} and {MAX_SIZE}")
        if self.frame < 0:
            raise ValueError("frame must not be negative")

    @classmethod
    def from_settings(
        cls, settings: Settings, *, size: int, unblur: bool, frame: int = 0
    ) -> Options:
        return cls(
            size=size,
            unblur=unblur,
            blur_radius=settings.safe_view_blur_radius,
            max_pixels=settings.image_max_pixels,
            frame=frame,
            max_frames=settings.image_max_frames,
        )


@dataclass(frozen=True)
class Rendering:
    body: bytes
    media_type: str
    view: View
    content: Content
    """Whether the fetched file still has the SHA-256 recorded when it was first seen."""

    def __repr__(self) -> str:
        return f"Rendering({self.media_type}, {self.view}, {self.content}, {len(self.body)} B)"


def locate(session: Session, target_id: int, media_id: int) -> Source:
    """Where ``media_id`` was seen on ``target_id``; `MediaNotFound` if it was not."""
    row = session.execute(
        select(col(Sighting.media_url), col(Media.sha256))
        .join(Media, col(Media.id) == col(Sighting.media_id))
        .where(col(Sighting.target_id) == target_id, col(Sighting.media_id) == media_id)
    ).first()
    if row is None:
        raise MediaNotFound()
    return Source(target_id, media_id, str(row[0]), str(row[1]))


def render(source: Source, *, fetcher: Fetcher, options: Options) -> Rendering:
    """Fetch the media afresh through the guarded client and render it in memory.

    Raises `MediaUnavailable` when it cannot be fetched, is no longer media, or cannot
    be decoded. No side effects beyond the fetch; the bytes go when this returns.
    """
    reason: str | None = None
    try:
        digest = inline_sha256(source.url)
        if digest is None:
            content = fetcher.fetch(source.url).content
        else:
            content, reason = _carried(source.url, digest, fetcher)
    except FetchError as exc:
        reason = exc.reason
    if reason is not None:
        log.info(
            "safe view of media %s on target %s: %s", source.media_id, source.target_id, reason
        )
        raise MediaUnavailable(reason)
    same: Content = "same" if hashlib.sha256(content).hexdigest() == source.sha256 else "changed"
    mime = sniff(content)
    if mime in _PIL_FORMATS:
        body = _render_image(content, mime, options)
        del content
        return Rendering(body, "image/jpeg", "unblurred" if options.unblur else "blurred", same)
    if mime in _VECTOR_NAMES:
        del content
        text = f"{_VECTOR_NAMES[mime]} image: not shown"
        return Rendering(_placeholder(text, options.size), "image/png", "placeholder", same)
    if mime is not None and mime.startswith("video/"):
        if options.unblur:
            return Rendering(content, mime, "unblurred", same)
        del content
        text = "Video: unblur to play (sound off)"
        return Rendering(_placeholder(text, options.size), "image/png", "placeholder", same)
    del content
    log.info("safe view of media %s on target %s: not_media", source.media_id, source.target_id)
    raise MediaUnavailable("not_media")


# How far down a page a picture it carries is looked for again.
_INLINE_LINKS: Final = 1000


def _carried(url: str, digest: str, fetcher: Fetcher) -> tuple[bytes, str | None]:
    """A picture the page carries in itself (a ``data:`` URL), found again on the page
    by its SHA-256; or why not (``inline_gone``: the page no longer carries it)."""
    page = fetcher.fetch(url.split("#", 1)[0], keep_head=is_page)  # read as gather reads it
    links = media_links(
        page.content,
        page.url,
        limit=_INLINE_LINKS,
        content_type=page.content_type,
        inline=True,
    )
    for link in links:
        data = inline_picture(link, max_bytes=fetcher.policy.max_bytes)
        if data is not None and hashlib.sha256(data).hexdigest() == digest:
            return data, None
    return b"", "inline_gone"


def _render_image(data: bytes, mime: str, options: Options) -> bytes:
    # As hashing reads it (a JPEG without its end marker, a broken optional part).
    shown = decode_as_shown(data, mime, lambda bytes_: _render_once(bytes_, mime, options))
    # Raised here, outside any except block, so no Pillow exception is attached.
    if shown.reason is not None:
        raise MediaUnavailable(shown.reason)
    return shown.body


@dataclass(frozen=True)
class _Rendered:
    body: bytes
    reason: str | None
    header_read: bool

    @property
    def undecodable(self) -> bool:
        return self.reason == "decode_error"

    @property
    def too_large(self) -> bool:
        return self.reason == "image_too_large"


def _render_once(data: bytes, mime: str, options: Options) -> _Rendered:
    """The rendering, or why not; and whether Pillow opened the file at all."""
    reason: str | None = None
    body = b""
    opened = False
    try:
        with Image.open(io.BytesIO(data), formats=_PIL_FORMATS[mime]) as img:
            opened = True
            width, height = img.size
            if decoded_pixels(mime, width, height) > options.max_pixels:
                reason = "image_too_large"
            elif options.frame:
                reason = _seek(img, options)
            if reason is None:
                body = _draw(img, options)
    except Image.DecompressionBombError:
        reason = "image_too_large"  # Pillow's own limit (2 x Image.MAX_IMAGE_PIXELS)
    except _DECODE_ERRORS:
        reason = "decode_error"
    return _Rendered(body, reason, opened)


def _seek(img: Image.Image, options: Options) -> str | None:
    """Make ``options.frame`` the current frame, as hashing reaches its later frames
    (``walk_frames``): within ``max_pixels`` decoded pixels in all (the first frame
    counts, as seeking decodes it) and among the first ``max_frames``; None, or why
    not (``no_such_frame``, ``image_too_large``)."""
    frame = options.frame
    if img.format not in ANIMATED_FORMATS or frame >= options.max_frames:
        return "no_such_frame"
    width, height = img.size
    try:
        reached = max(walk_frames(img, frame, options.max_pixels - width * height), default=0)
    except EOFError:
        return "no_such_frame"
    except Image.DecompressionBombError:
        return "image_too_large"
    return None if reached == frame else "image_too_large"


def _fit(width: int, height: int, size: int) -> tuple[int, int]:
    scale = min(1.0, size / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _draw(img: Image.Image, options: Options) -> bytes:
    """The current frame, scaled to fit, blurred greyscale or in colour, as a new JPEG."""
    out_size = _fit(*img.size, options.size)
    mode = "RGB" if options.unblur else "L"
    img.draft(mode, out_size)  # JPEG: decoded at 1/2, 1/4 or 1/8 scale when that suffices
    img.load()
    frame = shown_upright(img)  # browsers honour the orientation; so do we
    out_size = _fit(*frame.size, options.size)
    frame = _flatten(frame, mode)
    if frame.size != out_size:
        frame = frame.resize(out_size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if not options.unblur:
        radius = options.blur_radius * max(out_size) / BLUR_REFERENCE
        frame = frame.filter(ImageFilter.GaussianBlur(max(radius, 1.0)))
    # Only the pixels go on: Pillow copies ``info`` through every operation and would
    # write the original's comment (and more) into the new file.
    clean = Image.frombytes(frame.mode, frame.size, frame.tobytes())
    buffer = io.BytesIO()
    clean.save(buffer, "JPEG", quality=85 if options.unblur else 75, optimize=True)
    return buffer.getvalue()


def _flatten(img: Image.Image, mode: str) -> Image.Image:
    """``img`` in ``mode`` (L or RGB), transparency laid on a mid grey."""
    if img.mode.startswith("I") or img.mode == "F":
        # 16-bit and float greyscale: convert() would clip at 255 instead of scaling.
        values = np.asarray(img).astype(np.float64)
        if img.mode != "F" and values.max(initial=0) > 255:
            values = values / 257.0
        img = Image.fromarray(np.clip(values + 0.5, 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert(mode)


def _placeholder(text: str, size: int) -> bytes:
    """A plain grey picture saying what is not shown: generated, nothing fetched in it."""
    width = max(MIN_SIZE, min(size, 800))
    height = max(MIN_SIZE // 2, width * 9 // 16)
    img = Image.new("L", (width, height), 96)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(10, width // 24))
    box = draw.textbbox((0, 0), text, font=font)
    at = ((width - box[2] - box[0]) / 2, (height - box[3] - box[1]) / 2)
    draw.text(at, text, fill=235, font=font)
    buffer = io.BytesIO()
    img.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()
