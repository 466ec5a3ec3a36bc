"""Known hash lists: import (CSV, INTERPOL ICSE, JSON lines, Project VIC VICS), list,
enable and disable, remove.

Invariants:
- A list file is streamed: parsing holds one batch of entries at a time, so memory does
  not grow with the file. The one exception is a VICS document, a single JSON value that
  is parsed whole with ``json.load``.
- Hex hashes are stored lowercased and validated by type (sha256 64, sha1 40, md5 32,
  phash 16, pdq 64 hex digits). PhotoDNA values are kept as text, as given, and never
  matched (``MATCHABLE_TYPES``).
- A line is imported whole or rejected whole, with its number and a reason; a good line
  is one entry (``KnownEntry``): the hashes of one file, with its category.
- Within a list an entry is unique by its key, the first of SHA-256, SHA-1, MD5, PDQ,
  pHash, PhotoDNA it has (``ENTRY_KEY``); of entries with the same key the first in the
  file wins. Exact matching looks media up by that key (``exact_key_matches``).
- On PostgreSQL each list has a partition of ``known_entry`` of its own. A new list is
  COPYed into a table of its own, indexed once at the end and attached: no index is
  maintained row by row. Well-formed CSV goes to COPY as it is (checked a block at a
  time); other lines are parsed one by one.
- The hotline's own list (``own``) is filled by its analysts only: it cannot be imported
  into or removed.
- Services never commit; ``import_list`` writes through the session's connection, so the
  caller's unit of work commits or rolls back everything.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import os
import re
import sqlite3
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, NamedTuple, cast

from sqlalchemy import bindparam, delete, func, select, text
from sqlalchemy.engine import Connection
from sqlmodel import Session, col

from hotline.db import built, utcnow
from hotline.errors import HotlineError
from triage.models import HashList, HashType, KnownEntry, MatchKind, MediaMatch

if TYPE_CHECKING:
    import psycopg

Format = Literal["csv", "icse", "jsonl", "vics"]
FORMATS: tuple[Format, ...] = ("csv", "icse", "jsonl", "vics")

# PhotoDNA is licensed and computed elsewhere; imported values are kept, never matched.
MATCHABLE_TYPES = frozenset(HashType) - {HashType.photodna}

HEAD_SIZE = 64 * 1024
BATCH_SIZE = 10_000
REJECTED_KEPT = 10_000
MAX_CATEGORY = 64
MAX_PHOTODNA = 1024  # 144 bytes as comma-separated decimals run to 575 and more
MAX_NAME = 100

_HEX_LENGTH = {
    HashType.sha256: 64,
    HashType.sha1: 40,
    HashType.md5: 32,
    HashType.phash: 16,
    HashType.pdq: 64,
}
_HEX = {t: re.compile(f"[0-9a-f]{{{n}}}") for t, n in _HEX_LENGTH.items()}
_PHOTODNA = re.compile(rf"[\x20-\x7e]{{1,{MAX_PHOTODNA}}}")
_INVALID = {t: f"{t.value}: not {n} hex digits" for t, n in _HEX_LENGTH.items()} | {
    HashType.photodna: f"photodna: not 1 to {MAX_PHOTODNA} printable ASCII characters"
}
_WHITESPACE = re.compile(r"[^\S ]|  ")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_NULL = "\\N"  # COPY text format
_TRUTHY = frozenset({"1", "true", "yes", "y", "x", "t"})


# --- errors -------------------------------------------------------------------------------


class UnknownList(HotlineError):
    code = "unknown_list"
    status_code = 404
    detail = "There is no hash list of that name."


class OwnListReadOnly(HotlineError):
    code = "own_list_read_only"
    status_code = 409
    detail = (
        "The hotline's own list holds the media its analysts confirmed; "
        "it cannot be imported into or removed."
    )


class FileGrew(HotlineError):
    code = "file_grew"
    status_code = 409
    detail = (
        "The file grew while it was read (is it still being written?): nothing was "
        "imported. Import it again once it is complete."
    )


def _grew(exc: BaseException) -> bool:
    """Whether an import failed because its file has more lines than were counted at
    the start: the private sequence over the reserved ids ran out (PostgreSQL)."""
    from psycopg.errors import SequenceGeneratorLimitExceeded

    return isinstance(exc, SequenceGeneratorLimitExceeded)


class UnrecognisedFormat(HotlineError):
    code = "unrecognised_format"
    status_code = 422
    detail = (
        "Unrecognised hash list format: expected a CSV file whose header names any of "
        "sha256, sha1, md5, pdq, phash (and optionally category), an INTERPOL ICSE export "
        "(';'-separated, header MD5;SHA1;PhotoDNA;...), JSON lines, or a Project VIC VICS "
        "JSON document."
    )


class InvalidListName(HotlineError):
    code = "invalid_list_name"
    status_code = 422
    detail = f"A list name is 1 to {MAX_NAME} printable characters."


# --- results ------------------------------------------------------------------------------


# The hash columns of an entry, in key order: the key is the first one an entry has.
KEY_TYPES: tuple[HashType, ...] = (
    HashType.sha256,
    HashType.sha1,
    HashType.md5,
    HashType.pdq,
    HashType.phash,
    HashType.photodna,
)
KEY_COLUMNS = tuple(t.value for t in KEY_TYPES)
_KEY_AT = {t: i for i, t in enumerate(KEY_TYPES)}


def key_sql(alias: str = "") -> str:
    """The entry key as SQL: the first hash an entry has (the partitions' unique index)."""
    prefix = f"{alias}." if alias else ""
    return f"coalesce({', '.join(prefix + c for c in KEY_COLUMNS)})"


ENTRY_KEY_SQL = key_sql()

# One good line: (line number, its hashes in KEY_TYPES order, None where absent, category).
# A plain tuple, not a NamedTuple, because a million-line list makes a million of them.
Entry = tuple[int, tuple[str | None, ...], str | None]


class Rejected(NamedTuple):
    line_no: int
    reason: str


@dataclass
class ImportSummary:
    """What an import did. ``rejected`` keeps the first ``REJECTED_KEPT``; the count is exact.

    ``added`` and ``duplicates`` count entries (good lines). For a VICS document the
    "lines" are the media items, numbered from 1 in document order.
    """

    list_name: str
    format: Format
    added: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    rejected_count: int = 0
    total_lines: int = 0

    @property
    def entries(self) -> int:
        return self.added + self.duplicates


@dataclass(frozen=True)
class ListInfo:
    name: str
    description: str | None
    enabled: bool
    own: bool
    entries: int
    counts: dict[str, int]  # entries with each hash type
    created_at: dt.datetime


ProgressCallback = Callable[[int, int], None]
StageCallback = Callable[[str], None]


# --- format detection ---------------------------------------------------------------------


def _sniff_encoding(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return "utf-8"


def _decode_head(head: bytes) -> str:
    # The head may end inside a multi-byte character; the incremental decoder drops it.
    return codecs.getincrementaldecoder(_sniff_encoding(head))(errors="replace").decode(head)


def _column_key(name: str) -> str:
    """``"SHA-256"``, ``" sha_256 "`` and ``"Sha256"`` all name the sha256 column."""
    return re.sub(r"[\s_\-\"']", "", name).lower()


_HASH_COLUMNS = {t.value: t for t in HashType}


def _header_columns(line: str, delimiter: str) -> list[str]:
    return [_column_key(cell) for cell in line.split(delimiter)]


def detect_format(head: bytes) -> Format:
    """Tell the format of a list from its first bytes (not from its file name).

    ``{``: a JSON object on the first line is JSON lines unless it holds a ``value``
    array, which (like a pretty-printed or long first object mentioning ``"value": [``
    or ``odata``) is a VICS document. Otherwise the first non-blank line is a header:
    ``;``-separated naming a hash column is ICSE, ``,``-separated is CSV.
    """
    text = _decode_head(head).lstrip("\ufeff \t\r\n")
    if not text:
        raise UnrecognisedFormat("The file is empty.")
    if text[0] in "{[":
        for line in text.splitlines()[:5]:
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):  # (nested past the recursion limit)
                continue
            if isinstance(obj, dict):
                return "vics" if isinstance(obj.get("value"), list) else "jsonl"
        if re.search(r'"value"\s*:\s*\[', text) or "odata" in text[:4096].lower():
            return "vics"
        raise UnrecognisedFormat()
    header = text.splitlines()[0]
    scores = {
        fmt: sum(1 for c in _header_columns(header, delimiter) if c in _HASH_COLUMNS)
        for fmt, delimiter in (("icse", ";"), ("csv", ","))
    }
    best: Format = "icse" if scores["icse"] > scores["csv"] else "csv"
    if scores[best] == 0:
        raise UnrecognisedFormat()
    return best


# --- parsing ------------------------------------------------------------------------------


class _Source(io.RawIOBase):
    """The bytes of a list: the already-read head, then the rest; counts what is consumed."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = memoryview(head)
        self._rest = rest
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(target), len(self._head))
            target[:n] = self._head[:n]
            self._head = self._head[n:]
        else:
            data = self._rest.read(len(target))
            n = len(data)
            target[:n] = data
        self.consumed += n
        return n


def _text(head: bytes, rest: IO[bytes], *, encoding: str, newline: str | None) -> IO[str]:
    """The list's text from ``head`` (already read) on, then the rest of the stream;
    undecodable bytes read as U+FFFD (the line is then rejected, not the file)."""
    return io.TextIOWrapper(
        cast(IO[bytes], io.BufferedReader(_Source(head, rest))),
        encoding=encoding,
        errors="replace",
        newline=newline,
    )


class _Counter:
    def __init__(self) -> None:
        self.lines = 0


def _category(raw: object) -> tuple[str | None, str | None]:
    """(category, None) or (None, reason)."""
    if raw is None:
        return None, None
    if isinstance(raw, bool):
        text = "true" if raw else "false"
    elif isinstance(raw, (str, int, float)):
        text = str(raw).strip()
    else:
        return None, "category is not a string or number"
    if not text:
        return None, None
    if _WHITESPACE.search(text):
        text = " ".join(text.split())  # a label: tabs and line breaks become spaces
    if len(text) > MAX_CATEGORY:
        return None, f"category longer than {MAX_CATEGORY} characters"
    if _CONTROL.search(text):
        return None, "category contains control characters"
    return text, None


def _hash_value(hash_type: HashType, raw: object) -> tuple[str | None, str | None]:
    """(normalised value, None), (None, None) for an empty cell, or (None, reason)."""
    if raw is None:
        return None, None
    if not isinstance(raw, str):
        return None, f"{hash_type.value}: not a string"
    value = raw.strip()
    if not value:
        return None, None
    if hash_type is HashType.photodna:
        return (value, None) if _PHOTODNA.fullmatch(value) else (None, _INVALID[hash_type])
    value = value.lower()
    return (value, None) if _HEX[hash_type].fullmatch(value) else (None, _INVALID[hash_type])


def _line(
    line_no: int, hashes: Iterable[tuple[HashType, object]], category: object
) -> Entry | Rejected:
    """Validate one line's hashes and category: its entry, or why it is rejected."""
    cat, reason = _category(category)
    if reason is not None:
        return Rejected(line_no, reason)
    values: list[str | None] = [None] * len(KEY_TYPES)
    for hash_type, raw in hashes:
        value, reason = _hash_value(hash_type, raw)
        if reason is not None:
            return Rejected(line_no, reason)
        if value is not None:
            values[_KEY_AT[hash_type]] = value
    if not any(values):
        return Rejected(line_no, "no hash value")
    return (line_no, tuple(values), cat)


class _Layout:
    """The columns of a CSV or ICSE list, from its header row, and how a row is read.

    Columns are recognised by name, case and ``-``/``_``/space aside: the hash types,
    ``category`` and ICSE's ``baseline`` (a true value makes the category ``baseline``).
    Other columns are ignored.
    """

    def __init__(self, header: list[str], delimiter: str) -> None:
        keys = [_column_key(cell) for cell in header]
        named = [k for k in keys if k in _HASH_COLUMNS or k in ("category", "baseline")]
        repeated = sorted({k for k in named if named.count(k) > 1})
        if repeated:  # which of the columns would count is anybody's guess
            raise UnrecognisedFormat(f"The header names {', '.join(repeated)} more than once.")
        self.delimiter = delimiter
        self.width = len(header)
        self.keys = keys
        self.columns: list[tuple[int, int, Callable[[str], object], str, HashType]] = []
        for key in dict.fromkeys(keys):
            hash_type = _HASH_COLUMNS.get(key)
            if hash_type is None:
                continue
            pattern = _PHOTODNA if hash_type is HashType.photodna else _HEX[hash_type]
            self.columns.append(
                (
                    keys.index(key),
                    _KEY_AT[hash_type],
                    pattern.fullmatch,
                    _INVALID[hash_type],
                    hash_type,
                )
            )
        if not self.columns:
            raise UnrecognisedFormat()
        self.category_at = keys.index("category") if "category" in keys else -1
        self.baseline_at = keys.index("baseline") if "baseline" in keys else -1
        self._categories: dict[str, tuple[str | None, str | None]] = {}

    def row(self, first: int, row: list[str]) -> Entry | Rejected | None:
        """One row's entry, or why it is rejected; None for a blank row. Written for speed:
        it is the path of every line the block check does not pass."""
        n = len(row)
        if n <= 1 and (not n or not row[0].strip()):
            return None
        if n > self.width:
            return Rejected(first, f"{n} fields, the header has {self.width}")
        category_at, baseline_at = self.category_at, self.baseline_at
        raw = row[category_at] if 0 <= category_at < n else ""
        if 0 <= baseline_at < n and row[baseline_at].strip().lower() in _TRUTHY:
            raw = "baseline"
        checked = self._categories.get(raw)
        if checked is None:
            checked = _category(raw)
            if len(self._categories) < 10_000:
                self._categories[raw] = checked
        category, reason = checked
        if reason is not None:
            return Rejected(first, reason)
        values: list[str | None] = [None] * len(KEY_TYPES)
        found = False
        for i, at, check, invalid, hash_type in self.columns:
            if i >= n:
                continue
            value = row[i]
            if not value:
                continue
            if hash_type is not HashType.photodna:
                value = value.lower()
            if check(value) is None:
                value = value.strip()
                if not value:
                    continue
                if check(value) is None:
                    return Rejected(first, invalid)
            values[at] = value
            found = True
        if not found:
            return Rejected(first, "no hash value")
        return (first, tuple(values), category)

    def block_check(self, newline: bytes) -> _BlockCheck | None:
        """The check whole blocks of lines pass through, when every column is a matchable
        hash type or the category: well-formed lines go to COPY as they are (see
        ``_BlockCheck``); None when the lines must be read one by one."""
        names = [_HASH_COLUMNS.get(key) for key in self.keys]
        if len(set(self.keys)) != len(self.keys) or self.baseline_at >= 0:
            return None
        if any(t is None and key != "category" for t, key in zip(names, self.keys, strict=True)):
            return None
        if any(t is HashType.photodna for t in names):
            return None
        lengths = [_HEX_LENGTH[t] if t is not None else 0 for t in names]
        return _BlockCheck(self.delimiter, newline, lengths, self.category_at)

    def copy_columns(self) -> tuple[str, ...]:
        """The entry columns the file's columns are, in file order (for COPY)."""
        return tuple(_HASH_COLUMNS[key].value if key != "category" else key for key in self.keys)


class _BlockCheck:
    """Which lines of a block are well formed, for all of them at once (numpy).

    A line is well formed when it ends with the file's line break and has exactly one
    field per column; each hash field is empty or lowercase hex of its type's length,
    at least one is not empty; the category field (if there is one) is empty or up to
    64 printable ASCII characters other than quotes, backslashes and the delimiter,
    with single spaces only between other characters (none at either end, never two).
    Such a line means, to COPY's CSV format, exactly what the csv module reads from it;
    any other line is read on its own. (Blocks holding a quote never get here.)

    Written for speed: a few passes over the bytes, then work on the few bytes that are
    neither hex digits nor separators (the category's, mostly), not per character.
    """

    # Classes of bytes: 0 for hex digits and separators, else what a category may hold.
    _CAT, _SPACE, _OTHER = 1, 2, 4

    def __init__(
        self, delimiter: str, newline: bytes, lengths: list[int], category_at: int
    ) -> None:
        import numpy as np

        self._delimiter = ord(delimiter)
        self._crlf = newline == b"\r\n"
        self._lengths = np.array(lengths, dtype=np.int64)  # 0: the category column
        self._hashes = np.flatnonzero(self._lengths > 0)
        self._category_at = category_at
        table = bytearray([self._OTHER]) * 256
        for c in range(0x21, 0x7F):
            if chr(c) not in f'"\\{delimiter}':
                table[c] = self._CAT
        table[0x20] = self._SPACE
        for c in b"0123456789abcdef\n" + delimiter.encode():
            table[c] = 0
        self._table = bytes(table)

    def lines(self, block: bytes) -> tuple[Any, Any]:
        """(offsets just past each line's ``\\n``, well-formed flags) of ``block``, which
        ends with a ``\\n``."""
        import numpy as np

        data = np.frombuffer(block, dtype=np.uint8)
        breaks = np.flatnonzero(data == 0x0A)
        count = len(breaks)
        starts = np.zeros(count, dtype=np.int64)
        starts[1:] = breaks[:-1] + 1
        ends = breaks.astype(np.int64)  # where the last field ends
        good = np.ones(count, dtype=bool)
        if self._crlf:
            carriage = (breaks > starts) & (data[np.maximum(breaks - 1, 0)] == 0x0D)
            good &= carriage
            ends = ends - carriage

        # Fields: exactly one delimiter fewer than columns.
        width = len(self._lengths)
        delimiters = np.flatnonzero(data == self._delimiter)
        if width > 1 and not len(delimiters):
            return breaks + 1, np.zeros(count, dtype=bool)
        first = np.searchsorted(delimiters, starts)
        good &= np.searchsorted(delimiters, breaks) - first == width - 1
        if width > 1:
            at = np.minimum(first[:, None] + np.arange(width - 1), len(delimiters) - 1)
            inner = delimiters[at]
            field_starts = np.concatenate([starts[:, None], inner + 1], axis=1)
            field_ends = np.concatenate([inner, ends[:, None]], axis=1)
        else:
            field_starts, field_ends = starts[:, None], ends[:, None]
        sizes = field_ends - field_starts
        hashes = sizes[:, self._hashes]
        good &= ((hashes == 0) | (hashes == self._lengths[self._hashes])).all(axis=1)
        good &= (hashes > 0).any(axis=1)

        # Bytes that are neither hex digits nor separators: allowed only as the category's
        # characters (or as the carriage return of a CRLF line break).
        # (bytes.translate classifies every byte in one pass: a numpy table lookup of each
        # took three times as long.)
        classified = np.frombuffer(block.translate(self._table), dtype=np.uint8)
        odd = np.flatnonzero(classified)
        if len(odd):
            classes = classified[odd]
            line = np.searchsorted(breaks, odd)
            if self._crlf:
                keep = odd != breaks[line] - 1  # (a stray CR fails below: not CAT/SPACE)
                odd, line = odd[keep], line[keep]
                classes = classes[keep]
            column = np.searchsorted(delimiters, odd) - first[line]
            allowed = (classes & (self._CAT | self._SPACE)) != 0
            allowed &= column == self._category_at
            spaces = odd[data[odd] == 0x20]
            doubled = spaces[1:][np.diff(spaces) == 1]
            good[line[~allowed]] = False
            good[np.searchsorted(breaks, doubled)] = False
        if self._category_at >= 0:
            size = sizes[:, self._category_at]
            start, end = field_starts[:, self._category_at], field_ends[:, self._category_at]
            filled = size > 0
            good &= size <= MAX_CATEGORY
            edge = (data[np.minimum(start, len(data) - 1)] == 0x20) | (
                data[np.maximum(end - 1, 0)] == 0x20
            )
            good &= ~(filled & edge)
        return breaks + 1, good


@dataclass(frozen=True)
class Block:
    """Lines that passed the block check, as read: COPY takes them as CSV."""

    data: bytes
    first_line: int  # the number of its first line
    lines: int
    columns: tuple[str, ...]
    delimiter: str


def parse_delimited(
    text: IO[str],
    *,
    delimiter: str,
    counter: _Counter | None = None,
    first_line: int = 1,
    layout: _Layout | None = None,
) -> Iterator[Entry | Rejected]:
    """CSV (``,``) and ICSE (``;``): a header row naming the columns (see ``_Layout``),
    then one row per item, read with the csv module. Blank lines are skipped; numbers are
    physical lines (the first line of a quoted multi-line row). ``layout`` and
    ``first_line``: the header was read already and ``text`` starts at that line."""
    counter = counter or _Counter()
    rows = _Rows(_bounded_lines(text), delimiter, layout)
    if layout is None:
        header: list[str] = []
        for _first, row in rows:
            if row == _TOO_LONG:
                raise UnrecognisedFormat(f"The header is a {_TOO_LONG}.")
            if isinstance(row, str) or not any(cell.strip() for cell in row):
                continue  # before the header, even an unreadable line is not a list line
            header = row
            break
        rows.layout = layout = _Layout(header, delimiter)
    yield from _items(rows, layout, counter, offset=first_line - 1)


def _items(
    rows: Iterable[tuple[int, list[str] | str]], layout: _Layout, counter: _Counter, *, offset: int
) -> Iterator[Entry | Rejected]:
    """Entries and rejected lines of csv rows (see ``_rows``), numbered ``offset`` on."""
    for first, row in rows:
        if isinstance(row, str):
            counter.lines += 1
            yield Rejected(first + offset, row)
            continue
        item = layout.row(first + offset, row)
        if item is not None:
            counter.lines += 1
            yield item


BLOCK_SIZE = 4 << 20
_MAX_LINE = 1 << 20
_TOO_LONG = "line longer than 1 MiB"


def _bounded_lines(text: IO[str]) -> Iterator[str | None]:
    """The lines of ``text``, each read up to ``_MAX_LINE`` characters; None for a longer
    line, whose characters are read and dropped (no list line is that long, and memory
    must not grow with a line)."""
    ends = ("\n", "\r")
    while line := text.readline(_MAX_LINE):
        if len(line) < _MAX_LINE or line.endswith(ends):
            yield line
            continue
        while (more := text.readline(_MAX_LINE)) and not more.endswith(ends):
            pass
        yield None


def parse_delimited_blocks(
    stream: IO[bytes], *, delimiter: str, encoding: str, counter: _Counter | None = None
) -> Iterator[Block | Entry | Rejected]:
    """Like ``parse_delimited`` for a UTF-8 stream, but runs of well-formed lines come
    out whole, as ``Block`` (see ``_Layout.block_pattern``); a line that is not is read
    on its own, and the run after it is a block again. A quote in a block may open a
    field that spans lines, so from such a block on the rest is read by
    ``parse_delimited``."""
    counter = counter or _Counter()
    line_no = 0
    header_line = b""
    while not header_line.strip():
        header_line = stream.readline(_MAX_LINE)
        if not header_line:
            raise UnrecognisedFormat()
        line_no += 1
        if line_no == 1 and encoding == "utf-8-sig":
            header_line = header_line.removeprefix(codecs.BOM_UTF8)
    head = header_line.rstrip(b"\r\n")
    ending = header_line[len(head) :]
    if (
        b"\r" in head
        or ending not in (b"\n", b"\r\n", b"")
        or (not ending and len(header_line) >= _MAX_LINE)
    ):
        # Lines that end in a lone CR (old Mac files) or in CR CR LF (blocks are cut at
        # LF only), or a header longer than a line may be: the csv module reads the whole
        # file, as it reads every file on SQLite, and numbers its lines alike.
        text = _text(header_line, stream, encoding="utf-8", newline="")
        yield from parse_delimited(text, delimiter=delimiter, counter=counter, first_line=line_no)
        return
    if not ending:
        header_line += b"\n"  # a header without lines
    newline = b"\r\n" if header_line.endswith(b"\r\n") else b"\n"
    try:
        header = next(
            csv.reader([header_line.decode("utf-8", "replace").rstrip("\r\n")], delimiter=delimiter)
        )
    except csv.Error:  # e.g. a cell over the csv module's field size limit
        raise UnrecognisedFormat() from None
    layout = _Layout(header, delimiter)
    check = layout.block_check(newline)
    columns = layout.copy_columns() if check is not None else ()
    rest = b""
    while True:
        data = stream.read(BLOCK_SIZE)
        block = rest + data
        if not data:
            if not block:
                return
            if not block.endswith(b"\n"):
                block += newline
            cut = len(block)
        else:
            cut = block.rfind(b"\n") + 1
            if cut == 0 and len(block) < BLOCK_SIZE * 4:
                rest = block
                continue
        block, rest = block[:cut], block[cut:]
        # A quote may open a field that spans lines, and a CR not before an LF is a line
        # break to the csv module: from such a block on, the csv module reads.
        if b'"' in block or cut == 0 or block.count(b"\r") != block.count(b"\r\n"):
            text = _text(block + rest, stream, encoding="utf-8", newline="")
            yield from parse_delimited(
                text, delimiter=delimiter, counter=counter, first_line=line_no + 1, layout=layout
            )
            return
        if check is None:
            yield from _lines(block, line_no, layout, counter)
            line_no += block.count(b"\n")
            continue
        # Runs of well-formed lines go whole; the lines of a run of others one by one.
        ends, good = check.lines(block)
        changes = (good[1:] != good[:-1]).nonzero()[0] + 1
        first = 0
        for last in [*changes.tolist(), len(good)]:
            start = int(ends[first - 1]) if first else 0
            end = int(ends[last - 1])
            lines = last - first
            if good[first]:
                counter.lines += lines
                yield Block(block[start:end], line_no + 1, lines, columns, delimiter)
            else:
                yield from _lines(block[start:end], line_no, layout, counter)
            line_no += lines
            first = last


def _lines(
    data: bytes, line_no: int, layout: _Layout, counter: _Counter
) -> Iterator[Entry | Rejected]:
    """The lines of ``data`` (none holding a quote), numbered after ``line_no``, one by
    one through the csv module."""
    texts = [line.removesuffix(b"\r").decode("utf-8", "replace") for line in data.split(b"\n")[:-1]]
    yield from _items(_Rows(texts, layout.delimiter, layout), layout, counter, offset=line_no)


_ROW_LINES = 16  # the most physical lines one row may take (a quoted field's line breaks)


class _RowTooLong(Exception):
    pass


class _LineTooLong(Exception):
    pass


class _Rows:
    """(first line number, row) of the csv module's reading of ``lines``; an unreadable
    row is its error message.

    A quoted field may go on over the next lines (a category written on two lines). A
    quote left open must not swallow the lines after it, though: a row of more than
    ``_ROW_LINES`` lines, or one whose later lines are list lines on their own (they hold
    a hash of ``layout``'s columns), is an unterminated quote. Its first line is then
    rejected and the lines after it are read again, as rows of their own.
    """

    def __init__(self, lines: Iterable[str | None], delimiter: str, layout: _Layout | None) -> None:
        self._feed = _Feed(lines)
        self._reader = csv.reader(self._feed, delimiter=delimiter)
        self._taken: list[tuple[int, str | None]] = []
        self.delimiter = delimiter
        self.layout = layout

    def __iter__(self) -> Iterator[tuple[int, list[str] | str]]:
        feed = self._feed
        while True:
            self._taken = feed.taken = []
            problem = None
            try:
                row = next(self._reader)
            except StopIteration:
                return
            except _RowTooLong:
                problem = "unterminated quote"
            except _LineTooLong:
                # The long line is rejected when it is the first of a row (after this,
                # it is: the row's later lines are read again).
                problem = _TOO_LONG if len(self._taken) == 1 else "unterminated quote"
            except csv.Error as exc:
                problem = f"unreadable line: {exc}"
            else:
                if len(self._taken) > 1 and self._swallowed():
                    problem = "unterminated quote"
                elif feed.ended and self._open_at_end():
                    problem = "unterminated quote"  # as it is when lines follow
            if problem is None:
                yield self._taken[0][0], row
                continue
            # Rejected: its first line. The lines after it are read again.
            feed.back.extend(reversed(self._taken[1:]))
            yield self._taken[0][0], problem

    def _open_at_end(self) -> bool:
        """Whether the row just read, the file's last, ends inside a quoted field (the
        csv module closes it at the end of the file): read with a line after it, it
        takes that line in."""
        text = "".join(line for _, line in self._taken if line is not None)
        return len(list(csv.reader(io.StringIO(text + "\n\x00"), delimiter=self.delimiter))) == 1

    def _swallowed(self) -> bool:
        """Whether a later line of the row just read is a list line of its own."""
        if self.layout is None:
            return False
        for _, line in self._taken[1:]:
            if line is None:  # (a row with a long line is rejected before this)
                continue
            for row in csv.reader([line.rstrip("\r\n")], delimiter=self.delimiter):
                item = self.layout.row(0, row)
                if item is not None and not isinstance(item, Rejected):
                    return True
        return False


class _Feed:
    """The lines the csv module reads, numbered; lines put back are read again first."""

    def __init__(self, lines: Iterable[str | None]) -> None:
        self._source = iter(lines)
        self._count = 0
        self.ended = False  # the source is used up
        self.back: list[tuple[int, str | None]] = []  # last first
        self.taken: list[tuple[int, str | None]] = []  # the lines of the row being read

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        if len(self.taken) >= _ROW_LINES:
            raise _RowTooLong
        if self.back:
            taken = self.back.pop()
        else:
            try:
                line = next(self._source)
            except StopIteration:
                self.ended = True
                raise
            self._count += 1
            taken = (self._count, line)
        self.taken.append(taken)
        if taken[1] is None:  # a line longer than _MAX_LINE (``_bounded_lines``)
            raise _LineTooLong
        return taken[1]


def _object_hashes(obj: dict[str, Any]) -> tuple[list[tuple[HashType, object]], object]:
    """The hashes and category of a JSON object, keys matched like CSV column names.

    Either one key per hash type (``{"md5": ..., "sha1": ..., "category": ...}``) or
    ``{"hash_type"|"type": "md5", "value"|"hash": ..., "category": ...}``.
    """
    keyed = {_column_key(k): v for k, v in obj.items()}
    hashes = [(t, keyed[k]) for k, t in _HASH_COLUMNS.items() if k in keyed]
    if not hashes:
        kind = keyed.get("hashtype", keyed.get("type"))
        value = keyed.get("value", keyed.get("hash"))
        if isinstance(kind, str) and _column_key(kind) in _HASH_COLUMNS:
            hashes = [(_HASH_COLUMNS[_column_key(kind)], value)]
        elif kind is not None:
            raise ValueError(f"unknown hash type {str(kind)[:20]!r}")
    return hashes, keyed.get("category")


def parse_jsonl(text: IO[str], *, counter: _Counter | None = None) -> Iterator[Entry | Rejected]:
    """One JSON object per line; blank lines are skipped."""
    counter = counter or _Counter()
    for line_no, line in enumerate(_bounded_lines(text), 1):
        if line is None:
            counter.lines += 1
            yield Rejected(line_no, _TOO_LONG)
            continue
        if not line.strip():
            continue
        counter.lines += 1
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):  # (nested past the recursion limit)
            yield Rejected(line_no, "not valid JSON")
            continue
        if not isinstance(obj, dict):
            yield Rejected(line_no, "not a JSON object")
            continue
        try:
            hashes, category = _object_hashes(obj)
        except ValueError as exc:
            yield Rejected(line_no, str(exc))
            continue
        yield _line(line_no, hashes, category)


def _vics_media(value: list[Any]) -> Iterator[object]:
    """The media items of a VICS ``value`` array, cases (VICS 1.x, ``#Cases``) opened."""
    for item in value:
        media = item.get("Media", item.get("media")) if isinstance(item, dict) else None
        if isinstance(media, list):
            yield from media
        else:
            yield item


def parse_vics(text: IO[str], *, counter: _Counter | None = None) -> Iterator[Entry | Rejected]:
    """A Project VIC VICS (OData) document: ``value[]`` of media items (VICS 2.0,
    ``#Media``) or of cases holding them (``value[].Media[]``), with MD5, SHA1, Category.

    Parsed whole (one JSON value). Media items are numbered from 1 in document order and
    reported by that number; SHA256, PhotoDNA, pHash and PDQ are taken when present.
    """
    counter = counter or _Counter()
    try:
        document = json.load(text)
    except ValueError as exc:
        raise UnrecognisedFormat(f"The VICS document is not valid JSON: {exc}") from None
    except RecursionError:
        raise UnrecognisedFormat("The VICS document is nested too deeply.") from None
    if not isinstance(document, dict) or not isinstance(document.get("value"), list):
        raise UnrecognisedFormat('The VICS document has no "value" array.')
    for number, item in enumerate(_vics_media(document["value"]), 1):
        counter.lines += 1
        if not isinstance(item, dict):
            yield Rejected(number, "media item is not a JSON object")
            continue
        try:
            hashes, category = _object_hashes(item)
        except ValueError as exc:
            yield Rejected(number, str(exc))
            continue
        yield _line(number, hashes, category)


def parse(
    stream: IO[bytes], fmt: Format, *, counter: _Counter | None = None, blocks: bool = False
) -> Iterator[Block | Entry | Rejected]:
    """Entries and rejected lines of a binary stream in the given format; with
    ``blocks``, UTF-8 CSV and ICSE also give blocks of well-formed lines as read."""
    head = stream.read(4)
    encoding = _sniff_encoding(head)
    if blocks and fmt in ("csv", "icse") and encoding != "utf-16":
        return parse_delimited_blocks(
            cast(IO[bytes], io.BufferedReader(_Source(head, stream), BLOCK_SIZE)),
            delimiter="," if fmt == "csv" else ";",
            encoding=encoding,
            counter=counter,
        )
    text = _text(head, stream, encoding=encoding, newline="" if fmt in ("csv", "icse") else None)
    if fmt == "csv":
        return parse_delimited(text, delimiter=",", counter=counter)
    if fmt == "icse":
        return parse_delimited(text, delimiter=";", counter=counter)
    if fmt == "jsonl":
        return parse_jsonl(text, counter=counter)
    return parse_vics(text, counter=counter)


# --- writing ------------------------------------------------------------------------------


def _copy_text(value: str) -> str:
    """A field of COPY's text format."""
    if _COPY_SPECIAL.search(value) is None:
        return value
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def _csv_lines(batch: list[Entry], columns: tuple[str, ...], delimiter: str) -> str:
    """Entries as lines of a block's CSV layout (``columns``, entry column names in file
    order): an absent value is an empty field (NULL); a category is quoted if it needs
    to be."""
    at = [_KEY_AT[HashType(c)] if c != "category" else -1 for c in columns]
    out = io.StringIO()
    write = csv.writer(out, delimiter=delimiter, lineterminator="\n").writerow
    for _line_no, values, category in batch:
        write([values[i] if i >= 0 else category for i in at])  # None: an empty field
    return out.getvalue()


def partition_name(list_id: int) -> str:
    """The PostgreSQL partition of ``known_entry`` holding one list."""
    return f"known_entry_{int(list_id)}"


def _index_partition(cursor: Any, name: str) -> None:
    cursor.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {name}_key ON {name} (({ENTRY_KEY_SQL}))")
    # Ids only grow within a partition: a block range index is tiny and built in one pass.
    cursor.execute(
        f"CREATE INDEX IF NOT EXISTS {name}_id ON {name} USING brin (id) WITH (autosummarize = on)"
    )


def _tie_to_list(cursor: Any, name: str) -> None:
    """The partition's foreign key to its list (cascading deletes; checking rows added
    later). The key is on each partition, not on ``known_entry``: attaching a partition
    to a table with a key made PostgreSQL scan all its rows to validate it. NOT VALID,
    since the rows already there cannot break it: the partition's bound holds them to
    one list id, whose row the import made or locked."""
    cursor.execute(
        f"ALTER TABLE {name} ADD CONSTRAINT {name}_list_id_fkey FOREIGN KEY (list_id)"
        " REFERENCES hash_list (id) ON DELETE CASCADE NOT VALID"
    )


def _create_partition(cursor: Any, list_id: int) -> None:
    name = partition_name(list_id)
    found = cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    if found and found[0]:
        return  # (CREATE INDEX IF NOT EXISTS would still lock the table first)
    cursor.execute(
        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF known_entry FOR VALUES IN ({int(list_id)})"
    )
    _tie_to_list(cursor, name)
    _index_partition(cursor, name)


def create_partition(session: Session, list_id: int) -> None:
    """PostgreSQL: the list's (empty) partition, if it has none yet. Elsewhere nothing."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return
    raw = cast("psycopg.Connection[Any]", connection.connection.driver_connection)
    with raw.cursor() as cursor:
        _create_partition(cursor, list_id)


class _Writer:
    """Takes the valid entries of one import in batches, then adds them to the list."""

    def add(self, batch: list[Entry]) -> None:
        raise NotImplementedError

    def add_block(self, block: Block) -> None:
        raise NotImplementedError

    def finish(self) -> int:
        """Complete the import; return how many entries were new to the list."""
        raise NotImplementedError

    def abort(self) -> None:
        return None


_ENTRY_COLUMNS = (*KEY_COLUMNS, "category")


_IMPORT_IDS = "pg_temp.hotline_import_ids"


def _reserve_ids(connection: Connection, count: int) -> int | None:
    """Take ``count`` consecutive ids of ``known_entry_id_seq``; returns the first, or
    None when they cannot be had at once (the import then takes them one by one).

    On a connection of its own, committed at once: ALTER SEQUENCE holds off every other
    nextval until the commit, so the block is read and skipped in one step. It waits for
    transactions that took ids and are still open, so not when the import's own
    transaction took some (it would wait for itself), and at most 2 s for others. The
    import's transaction is already running (it locked its list's row), so the
    near-duplicate index keeps waiting for ids of the block it finds missing until the
    import ends.
    """
    raw = cast("psycopg.Connection[Any]", connection.connection.driver_connection)
    holding = raw.execute(
        "SELECT EXISTS (SELECT FROM pg_locks WHERE pid = pg_backend_pid()"
        " AND relation = 'known_entry_id_seq'::regclass AND mode <> 'AccessShareLock')"
    ).fetchone()
    if holding and holding[0]:
        return None
    import psycopg

    other = connection.engine.raw_connection()
    try:
        driver = cast("psycopg.Connection[Any]", other.driver_connection)
        with driver.transaction(), driver.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '2s'")
            cursor.execute("ALTER SEQUENCE known_entry_id_seq INCREMENT BY 1")
            found = cursor.execute("SELECT last_value, is_called FROM known_entry_id_seq")
            last, called = found.fetchone() or (0, True)
            first = int(last) + 1 if called else int(last)
            cursor.execute("SELECT setval('known_entry_id_seq', %s)", (first + count - 1,))
        return first
    except psycopg.errors.LockNotAvailable:
        return None
    finally:
        other.close()


class _PostgresWriter(_Writer):
    """COPY into a table of the import's own, then index it once.

    A list new in this import: its partition is built as a table of its own (with the
    partition's CHECK, so attaching it reads nothing), filled by COPY in file order,
    indexed (the unique key index doubles as the test for repeats in the file; only when
    it fails are the later copies deleted), and attached. A list that exists already: the
    entries are COPYed into a temporary table and merged, ``DISTINCT ON`` the key in
    line order and ``ON CONFLICT DO NOTHING``, sorted by key so the partition's index is
    visited in order.

    Blocks that passed the block check go to ``COPY ... (FORMAT csv)`` as they are; other
    entries to COPY's text format. A writer thread sends the data while the next block
    is checked.
    """

    def __init__(
        self, connection: Connection, list_id: int, *, fresh: bool, most_rows: int | None = None
    ) -> None:
        self._raw = cast("psycopg.Connection[Any]", connection.connection.driver_connection)
        self._list_id = int(list_id)
        self._fresh = fresh
        self._categories: dict[str | None, str] = {}
        self._cursor = self._raw.cursor()
        self._copying: Any = None
        self._copy: Any = None
        self._statement = ""
        self._layout: tuple[tuple[str, ...], str] | None = None  # a block COPY's, if open
        self._written = 0
        self._partition = partition_name(list_id)
        cursor = self._cursor
        if fresh:
            self._table = self._partition
            exists = cursor.execute("SELECT to_regclass(%s)", (self._table,)).fetchone()
            if exists and exists[0]:
                # Left by a list that had this id before (ids restart only when a test
                # database is reset); it holds nothing of this list.
                cursor.execute(f"DROP TABLE {self._table}")
            cursor.execute(
                f"CREATE TABLE {self._table} (LIKE known_entry INCLUDING DEFAULTS,"
                f" CONSTRAINT {self._table}_list CHECK (list_id = {self._list_id}))"
            )
            cursor.execute(
                f"ALTER TABLE {self._table} ALTER list_id SET DEFAULT {self._list_id},"
                " ALTER added_at SET DEFAULT now()"
            )
            first = _reserve_ids(connection, most_rows) if most_rows else None
            self._own_ids = first is not None
            if first is not None and most_rows:
                # A private, cached sequence over the reserved block: nextval of the shared
                # sequence for every row costs a third of the COPY. MAXVALUE: a file that
                # grew since it was counted fails the import rather than reuse an id.
                cursor.execute(
                    f"CREATE TEMPORARY SEQUENCE {_IMPORT_IDS} START {first}"
                    f" MINVALUE {first} MAXVALUE {first + most_rows - 1} CACHE 1000"
                )
                cursor.execute(
                    f"ALTER TABLE {self._table} ALTER id SET DEFAULT nextval('{_IMPORT_IDS}')"
                )
        else:
            self._table = "hotline_entry_staging"
            columns = ", ".join(f"{c} text" for c in _ENTRY_COLUMNS)
            cursor.execute(
                f"CREATE TEMPORARY TABLE {self._table} (line bigint GENERATED ALWAYS AS"
                f" IDENTITY, {columns}) ON COMMIT DROP"
            )

    def _start(self, statement: str) -> Any:
        if statement != self._statement:
            self._end()
            from psycopg.copy import QueuedLibpqWriter

            self._copying = self._cursor.copy(statement, writer=QueuedLibpqWriter(self._cursor))
            self._copy = self._copying.__enter__()
            self._statement = statement
        return self._copy

    def _end(self) -> None:
        if self._copying is not None:
            copying, self._copying, self._statement = self._copying, None, ""
            self._layout = None
            copying.__exit__(None, None, None)

    def _options(self, *options: str) -> str:
        """COPY's options clause. (No FREEZE: tried on a million lines, it gained
        nothing measurable.)"""
        return f" ({', '.join(options)})" if options else ""

    def add(self, batch: list[Entry]) -> None:
        if self._layout is not None:
            # Between blocks: into the same COPY, as CSV lines of the file's columns, so
            # that rows reach the table in file order (the first of repeats is kept).
            self._copy.write(_csv_lines(batch, *self._layout))
            self._written += len(batch)
            return
        copy = self._start(
            f"COPY {self._table} ({', '.join(_ENTRY_COLUMNS)}) FROM STDIN{self._options()}"
        )
        categories = self._categories
        lines = []
        for _line_no, values, category in batch:
            cat = categories.get(category)
            if cat is None:
                cat = _NULL if category is None else _copy_text(category)
                if len(categories) < 10_000:
                    categories[category] = cat
            photodna = values[-1]
            cells = [_NULL if v is None else v for v in values[:-1]]
            cells.append(_NULL if photodna is None else _copy_text(photodna))
            cells.append(cat)
            lines.append("\t".join(cells) + "\n")
        copy.write("".join(lines))
        self._written += len(batch)

    def add_block(self, block: Block) -> None:
        csv_options = ["FORMAT csv"] + (["DELIMITER ';'"] if block.delimiter == ";" else [])
        copy = self._start(
            f"COPY {self._table} ({', '.join(block.columns)}) FROM STDIN"
            + self._options(*csv_options)
        )
        self._layout = (block.columns, block.delimiter)
        copy.write(block.data)
        self._written += block.lines

    def finish(self) -> int:
        self._end()
        cursor = self._cursor
        # For this transaction's sorts only.
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        cursor.execute("SET LOCAL work_mem = '64MB'")
        if self._fresh:
            if self._own_ids:
                cursor.execute(
                    f"ALTER TABLE {self._table} ALTER id SET DEFAULT nextval('known_entry_id_seq')"
                )
                cursor.execute(f"DROP SEQUENCE {_IMPORT_IDS}")
            added = self._written - self._index_fresh()
            _tie_to_list(cursor, self._table)
            cursor.execute(
                f"ALTER TABLE known_entry ATTACH PARTITION {self._table}"
                f" FOR VALUES IN ({self._list_id})"
            )
        else:
            _create_partition(cursor, self._list_id)
            columns = ", ".join(_ENTRY_COLUMNS)
            cursor.execute(
                f"INSERT INTO {self._partition} (list_id, {columns}, added_at)"  # noqa: S608
                f" SELECT DISTINCT ON ({ENTRY_KEY_SQL}) %s, {columns}, now()"
                f" FROM {self._table} ORDER BY {ENTRY_KEY_SQL}, line"
                f" ON CONFLICT (({ENTRY_KEY_SQL})) DO NOTHING",
                (self._list_id,),
            )
            added = int(cursor.rowcount)
            cursor.execute(f"DROP TABLE {self._table}")
        cursor.close()
        return added

    def _index_fresh(self) -> int:
        """Index the new partition; returns how many repeated entries were deleted."""
        import psycopg

        cursor, table = self._cursor, self._table
        try:
            with self._raw.transaction():  # a savepoint
                _index_partition(cursor, table)
            return 0
        except psycopg.errors.UniqueViolation:
            pass
        # The file repeats entries: keep the first (ids follow the file's order).
        cursor.execute(
            f"DELETE FROM {table} a USING {table} b"  # noqa: S608
            f" WHERE {key_sql('a')} = {key_sql('b')} AND a.id > b.id"
        )
        repeated = int(cursor.rowcount)
        _index_partition(cursor, table)
        return repeated

    def abort(self) -> None:
        # Ends the COPY with an error; the caller's rollback then drops what was made.
        if self._copying is not None:
            with suppress(Exception):
                self._copying.__exit__(RuntimeError, RuntimeError("import aborted"), None)
        self._cursor.close()


class _SQLiteWriter(_Writer):
    """executemany of INSERT OR IGNORE, batch by batch, in the session's transaction."""

    def __init__(self, connection: Connection, list_id: int) -> None:
        self._raw = cast(sqlite3.Connection, connection.connection.driver_connection)
        self._list_id = list_id
        self._added = 0
        column = cast(Any, KnownEntry.__table__).c.added_at  # type: ignore[attr-defined]
        processor = column.type.dialect_impl(connection.dialect).bind_processor(connection.dialect)
        now = utcnow()
        self._added_at = processor(now) if processor else now
        columns = ", ".join(_ENTRY_COLUMNS)
        marks = ", ".join("?" for _ in _ENTRY_COLUMNS)
        self._insert = (
            f"INSERT OR IGNORE INTO known_entry (list_id, {columns}, added_at)"  # noqa: S608
            f" VALUES (?, {marks}, ?)"
        )

    def add(self, batch: list[Entry]) -> None:
        # Sorted (stable, so the first of a repeated entry wins) for index locality.
        batch.sort(key=_entry_key)
        list_id, added_at = self._list_id, self._added_at
        cursor = self._raw.executemany(
            self._insert, [(list_id, *values, cat, added_at) for _, values, cat in batch]
        )
        self._added += int(cursor.rowcount)

    def finish(self) -> int:
        return self._added


def _writer(
    session: Session, list_id: int, *, fresh: bool, most_rows: int | None = None
) -> _Writer:
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        return _PostgresWriter(connection, list_id, fresh=fresh, most_rows=most_rows)
    if connection.dialect.name == "sqlite":
        return _SQLiteWriter(connection, list_id)
    raise NotImplementedError(f"hash list import on {connection.dialect.name}")


# --- services -----------------------------------------------------------------------------


def clean_list_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or _CONTROL.search(name):
        raise InvalidListName()
    return name


def get_list(session: Session, name: str) -> HashList:
    query = select(HashList).where(col(HashList.name) == name)
    found: HashList | None = session.execute(query).scalar_one_or_none()
    if found is None:
        raise UnknownList(f"There is no hash list named {name!r}.")
    return found


def _open(source: str | os.PathLike[str] | IO[bytes]) -> tuple[IO[bytes], int, bool]:
    """(binary stream, size or 0 when unknown, whether we opened it)."""
    if isinstance(source, (str, os.PathLike)):
        stream: IO[bytes] = Path(source).open("rb")  # noqa: SIM115 (closed by the caller)
        return stream, os.fstat(stream.fileno()).st_size, True
    try:
        size = os.fstat(source.fileno()).st_size
    except (OSError, AttributeError, io.UnsupportedOperation):
        size = 0
    return source, size, False


def create_list(
    session: Session,
    name: str,
    *,
    description: str | None = None,
    own: bool = False,
    enabled: bool = True,
    now: dt.datetime | None = None,
) -> HashList:
    """A new, empty list (with its partition on PostgreSQL)."""
    hash_list = HashList(
        name=clean_list_name(name),
        description=description,
        own=own,
        enabled=enabled,
        created_at=now or utcnow(),
    )
    session.add(hash_list)
    session.flush()
    create_partition(session, cast(int, hash_list.id))
    return hash_list


def import_list(
    session: Session,
    source: str | os.PathLike[str] | IO[bytes],
    *,
    list_name: str,
    description: str | None = None,
    on_progress: ProgressCallback | None = None,
    on_stage: StageCallback | None = None,
    batch_size: int = BATCH_SIZE,
) -> ImportSummary:
    """Add the entries of a list file (path or binary stream) to the named list.

    Creates the list if missing (and sets its description when one is given). Detects the
    format from the content. Good lines are kept, bad ones reported by number; entries the
    list already holds, or that the file repeats, count as duplicates. Calls
    ``on_progress(bytes_read, total_bytes)`` (total 0 when unknown) after each batch and
    ``on_stage("reading" | "merging")``. Writes through the session without committing.
    Raises ``UnrecognisedFormat``, ``OwnListReadOnly``, ``InvalidListName``, ``OSError``.
    """
    list_name = clean_list_name(list_name)
    stream, total, opened = _open(source)
    try:
        head = stream.read(HEAD_SIZE)
        fmt = detect_format(head)
        # The row lock serialises imports into one list (see _PostgresWriter.finish);
        # NO KEY: inserts elsewhere that only check the foreign key are not held up.
        hash_list = session.execute(
            select(HashList)
            .where(col(HashList.name) == list_name)
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE
        ).scalar_one_or_none()
        fresh = hash_list is None
        if hash_list is None:
            hash_list = HashList(name=list_name, description=description)
        elif hash_list.own:
            raise OwnListReadOnly()
        elif description is not None:
            hash_list.description = description
        session.add(hash_list)
        session.flush()
        list_id = cast(int, hash_list.id)

        summary = ImportSummary(list_name=list_name, format=fmt)
        source_bytes = _Source(head, stream)
        counter = _Counter()
        # VICS is one JSON value: its lines say nothing of its media items.
        most_rows = _count_lines(stream) if fresh and fmt != "vics" else None
        writer = _writer(session, list_id, fresh=fresh, most_rows=most_rows)
        items = parse(
            cast(IO[bytes], source_bytes),
            fmt,
            counter=counter,
            blocks=isinstance(writer, _PostgresWriter),
        )
        if on_stage:
            on_stage("reading")
        batch: list[Entry] = []
        valid = 0

        def write_batch() -> None:
            nonlocal batch, valid
            if batch:
                writer.add(batch)
                valid += len(batch)
                batch = []

        try:
            for item in items:
                kind = type(item)
                if kind is Block:
                    block = cast(Block, item)
                    write_batch()  # the lines before it first: rows go in file order
                    writer.add_block(block)
                    valid += block.lines
                    if on_progress:
                        on_progress(source_bytes.consumed, total)
                    continue
                if kind is Rejected:
                    rejected = cast(Rejected, item)
                    summary.rejected_count += 1
                    if len(summary.rejected) < REJECTED_KEPT:
                        summary.rejected.append((rejected.line_no, rejected.reason))
                    elif on_progress and summary.rejected_count % batch_size == 0:
                        on_progress(source_bytes.consumed, total)
                    continue
                batch.append(cast(Entry, item))
                if len(batch) >= batch_size:
                    write_batch()
                    if on_progress:
                        on_progress(source_bytes.consumed, total)
            write_batch()
            if on_progress:
                on_progress(source_bytes.consumed, total)
            if on_stage:
                on_stage("merging")
            summary.added = writer.finish()
        except BaseException as exc:
            writer.abort()
            if _grew(exc):
                raise FileGrew() from None
            raise
        summary.total_lines = counter.lines
        summary.duplicates = valid - summary.added
        return summary
    finally:
        if opened:
            stream.close()


def add_entries(session: Session, list_id: int, entries: list[dict[str, Any]]) -> int:
    """Add entries (dicts of hash columns, ``category`` and ``added_at``) to a list,
    skipping those whose key the list holds; returns how many were new."""
    if not entries:
        return 0
    columns = (*_ENTRY_COLUMNS, "added_at")
    rows = [{"list_id": list_id} | {c: entry.get(c) for c in columns} for entry in entries]
    names = ", ".join(("list_id", *columns))
    values = ", ".join(f":{c}" for c in ("list_id", *columns))
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        create_partition(session, list_id)
        statement = (
            f"INSERT INTO {partition_name(list_id)} ({names}) VALUES ({values})"  # noqa: S608
            f" ON CONFLICT (({ENTRY_KEY_SQL})) DO NOTHING"
        )
    else:
        statement = f"INSERT OR IGNORE INTO known_entry ({names}) VALUES ({values})"  # noqa: S608
    table = cast(Any, KnownEntry.__table__)  # type: ignore[attr-defined]
    typed = text(statement).bindparams(bindparam("added_at", type_=table.c.added_at.type))
    added = 0
    for row in rows:  # rowcount of an executemany is not reliable on every driver
        added += int(cast(Any, session.execute(typed, row)).rowcount)
    return added


class Removed(NamedTuple):
    """What ``remove_entries`` took off a list."""

    entries: int
    media: list[int]  # media that lost a match through them
    near: list[tuple[int, str]]  # (media, hash type) that lost a near match
    ids: list[int]  # of the entries


def remove_entries(session: Session, list_id: int, keys: Iterable[str]) -> Removed:
    """Remove a list's entries with these keys and the matches found through them."""
    wanted = sorted(set(keys))
    if not wanted:
        return Removed(0, [], [], [])
    where = (col(KnownEntry.list_id) == list_id, entry_key().in_(wanted))
    ids = sorted(session.execute(select(col(KnownEntry.id)).where(*where)).scalars())
    if not ids:
        return Removed(0, [], [], [])
    media, near = drop_matches_through(session, ids)
    session.execute(delete(KnownEntry).where(col(KnownEntry.id).in_(ids)))
    return Removed(len(ids), media, near, ids)


def drop_matches_through(
    session: Session, entry_ids: list[int]
) -> tuple[list[int], list[tuple[int, str]]]:
    """Delete the matches found through these entries (explicitly: matches have no
    foreign key to the entries); returns the media that lost one, and the (media, hash
    type) that lost a near one."""
    lost = session.execute(
        delete(MediaMatch)
        .where(col(MediaMatch.known_entry_id).in_(entry_ids))
        .returning(col(MediaMatch.media_id), col(MediaMatch.kind), col(MediaMatch.hash_type))
    ).all()
    near = {(int(m), HashType(t).value) for m, kind, t in lost if kind == MatchKind.near}
    return sorted({int(m) for m, _, _ in lost}), sorted(near)


def _count_lines(stream: IO[bytes]) -> int | None:
    """At least how many entries a list file can hold, counted from the file's start
    without moving the stream (``pread``): its line breaks, ``\n`` and ``\r`` alike
    (the readers take either as one), plus one, and never below 2 (the smallest block
    of ids). None when the stream is not a plain file on disk: a pipe cannot be read
    twice, and a decompressing reader's file holds other bytes. (A VICS document is one
    line: it is counted by what it is, a JSON value, not by lines.)"""
    raw = stream.raw if isinstance(stream, io.BufferedReader) else stream
    if not isinstance(raw, io.FileIO):
        return None
    try:
        fd = raw.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
    except (OSError, ValueError):
        return None
    count, offset = 1, 0
    while block := os.pread(fd, BLOCK_SIZE, offset):
        count += block.count(b"\n") + block.count(b"\r")
        offset += len(block)
    return max(count, 2)


def _entry_key(entry: Entry) -> str:
    return next(v for v in entry[1] if v is not None)


def entry_key() -> Any:
    """The entry key as a SQL expression on ``known_entry`` (see ``key_sql``), of the
    table's Core columns: a select of ORM attributes takes the ORM's slower path."""
    table = KnownEntry.__table__  # type: ignore[attr-defined]
    return func.coalesce(*(table.c[c] for c in KEY_COLUMNS))


def _exact(_: Any) -> Any:
    # Core columns, like the key's: a select of ORM attributes takes the ORM's slower path.
    entry = KnownEntry.__table__  # type: ignore[attr-defined]
    lists = HashList.__table__  # type: ignore[attr-defined]
    key = entry_key()
    return (
        select(entry.c.id, entry.c.list_id, key, lists.c.name)
        .join(lists, lists.c.id == entry.c.list_id)
        .where(lists.c.enabled, key.in_(bindparam("wanted", expanding=True)))
        .order_by(entry.c.list_id, entry.c.id)
    )


def exact_matches(session: Session, values: Iterable[str]) -> list[tuple[int, int, str, str]]:
    """(entry id, list id, matched value, list name) of the enabled lists' entries whose
    key is one of ``values`` (SHA-256, SHA-1 and MD5 of media items), by list and entry;
    one index probe per list and value, in statements of at most 1000 values."""
    wanted = list(dict.fromkeys(v for v in values if v))
    found: list[tuple[int, int, str, str]] = []
    for start in range(0, len(wanted), 1000):
        rows = session.execute(built(session, _exact), {"wanted": wanted[start : start + 1000]})
        found += [
            (int(entry_id), int(list_id), str(value), str(name))
            for entry_id, list_id, value, name in rows
        ]
    return found


def _counts(session: Session, list_id: int | None = None) -> dict[int, dict[str, int]]:
    """list id -> entries (``"entries"``) and entries with each hash type."""
    columns = [func.count(getattr(KnownEntry, c)) for c in KEY_COLUMNS]
    query = select(col(KnownEntry.list_id), func.count(), *columns).group_by(
        col(KnownEntry.list_id)
    )
    if list_id is not None:
        query = query.where(col(KnownEntry.list_id) == list_id)
    counts: dict[int, dict[str, int]] = {}
    for found_id, entries, *by_type in session.execute(query):
        counts[int(found_id)] = {"entries": int(entries)} | {
            c: int(n) for c, n in zip(KEY_COLUMNS, by_type, strict=True) if n
        }
    return counts


def _info(hash_list: HashList, counts: dict[int, dict[str, int]]) -> ListInfo:
    found = dict(counts.get(hash_list.id or 0, {}))
    entries = found.pop("entries", 0)
    return ListInfo(
        name=hash_list.name,
        description=hash_list.description,
        enabled=hash_list.enabled,
        own=hash_list.own,
        entries=entries,
        counts=dict(sorted(found.items())),
        created_at=hash_list.created_at,
    )


def list_lists(session: Session) -> list[ListInfo]:
    """Every list, by name, with its number of entries and of hashes per type."""
    counts = _counts(session)
    lists = session.execute(select(HashList).order_by(col(HashList.name))).scalars()
    return [_info(h, counts) for h in lists]


def list_info(session: Session, name: str) -> ListInfo:
    """One list with its number of entries and of hashes per type; ``UnknownList`` if
    there is none."""
    hash_list = get_list(session, name)
    return _info(hash_list, _counts(session, hash_list.id))


def set_enabled(session: Session, name: str, enabled: bool) -> HashList:
    """Enable or disable matching against a list (the own list included)."""
    hash_list = get_list(session, name)
    hash_list.enabled = enabled
    session.add(hash_list)
    session.flush()
    return hash_list


def remove_list(session: Session, name: str) -> int:
    """Delete an imported list, its entries and the matches found through it; returns how
    many entries went. The own list cannot be removed."""
    hash_list = get_list(session, name)
    if hash_list.own:
        raise OwnListReadOnly()
    list_id = cast(int, hash_list.id)
    # Explicit rather than trusting ON DELETE CASCADE, which SQLite applies only with
    # foreign keys switched on for the connection.
    session.execute(delete(MediaMatch).where(col(MediaMatch.list_id) == list_id))
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        removed = int(
            session.execute(
                select(func.count()).where(col(KnownEntry.list_id) == list_id)
            ).scalar_one()
        )
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {partition_name(list_id)}")
    else:
        result = session.execute(delete(KnownEntry).where(col(KnownEntry.list_id) == list_id))
        removed = int(cast(Any, result).rowcount)
    session.delete(hash_list)
    session.flush()
    return removed


def is_matchable(hash_type: HashType) -> bool:
    return hash_type in MATCHABLE_TYPES
