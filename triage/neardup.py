"""Near duplicates by Hamming distance: pHash (64-bit) and PDQ (256-bit) codes.

Two layers:

- ``HammingIndex``: an in-memory multi-index hashing (MIH) structure over numpy arrays.
  Every code is cut into ``m`` substrings; by the generalised pigeonhole principle a
  code within distance ``r`` of the query is within ``r_j`` of it on at least one
  substring ``j`` whenever ``sum(r_j + 1) > r``. Each substring has a bucket table
  (counts as an offsets array plus the row ids sorted by substring value), so a query
  probes every substring value within ``r_j`` of the query's, gathers those buckets
  and computes the exact distance of each candidate. Recall is exact: nothing within
  the radius is missed. New codes land in a small unsorted delta that is scanned,
  and are merged into the tables when it grows.
- ``NearDuplicates``: the process-wide view of the database (media seen here and
  the entries of known lists), kept current by id watermarks that also remember
  the ids committed out of order, and checked against the database on every hit:
  a match is returned only if its row still exists with that value, its list is
  enabled and, for PDQ of media, its quality is high enough. It also remembers, for
  a while, which known-list rows it read when (``known_loaded``), for the catch-up of
  matches the workers missed (``triage.catchup``).

Invariants: the index holds codes and ids only; nothing here writes to the database.
See docs/neardup.md for the measurements behind the parameters.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, NamedTuple, cast

import numpy as np
import numpy.typing as npt
from sqlalchemy import ColumnElement, Select, func, or_, select, text
from sqlmodel import Session, col

from hotline.settings import get_settings
from triage.models import HashList, HashType, KnownEntry, Media, MediaFrame

log = logging.getLogger("hotline.triage.neardup")

Codes = npt.NDArray[np.uint64]
Ids = npt.NDArray[np.int64]
Distances = npt.NDArray[np.unsignedinteger[Any]]

# Below this many rows a scan beats the bucket tables (and costs no memory).
MIN_TABLE_ROWS = 1 << 14
# The delta is merged into the tables once it holds max(MIN_DELTA, rows / DELTA_FRACTION).
MIN_DELTA = 4096
DELTA_FRACTION = 512
# Widest substring: its offsets table has 2**bits entries of 4 bytes.
MAX_SUBSTRING_BITS = 24

# Cost model (nanoseconds) fitted to bench/neardup.py on a 2-core x86-64 machine; it only
# ranks layouts and decides when a scan is cheaper, so it need not be precise.
_FIXED_NS = 40_000.0
_PROBE_NS = 40.0
_CANDIDATE_NS = {1: 20.0, 4: 45.0}
_SCAN_ROW_NS = {1: 3.0, 4: 12.0}

_HEX = {64: re.compile(r"[0-9a-fA-F]{16}"), 256: re.compile(r"[0-9a-fA-F]{64}")}


# -- codes -------------------------------------------------------------------------------------


def phash_to_code(value: str) -> np.uint64:
    """A 16-hex-digit pHash as a 64-bit code."""
    if not _HEX[64].fullmatch(value):
        raise ValueError("a pHash is 16 hexadecimal digits")
    return np.uint64(int(value, 16))


def pdq_to_code(value: str) -> Codes:
    """A 64-hex-digit PDQ hash as four 64-bit words, most significant first."""
    if not _HEX[256].fullmatch(value):
        raise ValueError("a PDQ hash is 64 hexadecimal digits")
    return np.frombuffer(bytes.fromhex(value), dtype=">u8").astype(np.uint64)


# A pHash holds the signs of 64 DCT coefficients against their median, so a picture
# with structure sets 32 of its bits (imagehash; other tools differ by a bit or two).
# Far fewer, or far more, means that many coefficients tie at the median: the picture
# is flat or varies along one axis only at 32x32 (a spacer, a solid colour, a stripe, a
# plain gradient, a banner). Such hashes say nothing of the picture and lie close
# together (every flat picture has 8000000000000000), so they would match each other:
# they are neither indexed nor looked up. Their PDQ quality is low too, but PDQ quality
# is no test for pHash: a darkened copy of a photograph keeps its pHash within a few
# bits and has PDQ quality near 0.
PHASH_MIN_BITS = 16


def informative_phash(codes: Codes) -> npt.NDArray[np.bool_]:
    """Which 64-bit pHash codes describe a picture (see ``PHASH_MIN_BITS``)."""
    ones = np.bitwise_count(codes)
    return (ones >= PHASH_MIN_BITS) & (ones <= 64 - PHASH_MIN_BITS)


def matchable_codes(
    values: Sequence[str], bits: Literal[64, 256]
) -> tuple[Codes, npt.NDArray[np.bool_]]:
    """``hex_to_codes``, with the pHashes that say nothing of their picture marked
    invalid too: the codes a lookup searches and the index holds."""
    codes, valid = hex_to_codes(values, bits)
    if bits == 64:
        valid &= informative_phash(codes)
    return codes, valid


def informative_phashes(*values: str) -> bool:
    """Whether every one of these pHashes describes its picture (a value that is not 16
    hexadecimal digits describes nothing)."""
    try:
        codes = np.array([phash_to_code(value) for value in values], dtype=np.uint64)
    except ValueError:
        return False
    return bool(informative_phash(codes).all())


def code_to_phash(code: np.uint64 | int) -> str:
    return f"{int(code):016x}"


def code_to_pdq(code: Codes) -> str:
    return "".join(f"{int(word):016x}" for word in np.asarray(code, dtype=np.uint64).reshape(4))


def hex_to_codes(
    values: Sequence[str], bits: Literal[64, 256]
) -> tuple[Codes, npt.NDArray[np.bool_]]:
    """Many hex hashes at once: ``(codes, valid)``; invalid values get a zero code.

    Codes are ``(n,)`` for 64 bits and ``(n, 4)`` for 256. The fast path decodes the
    whole batch with one ``bytes.fromhex``; a batch with a malformed value is decoded
    one value at a time.
    """
    words = bits // 64
    digits = bits // 4
    n = len(values)
    shape = (n,) if words == 1 else (n, words)
    if n == 0:
        return np.zeros(shape, dtype=np.uint64), np.zeros(0, dtype=np.bool_)
    if set(map(len, values)) == {digits}:
        try:
            raw = bytes.fromhex("".join(values))
        except ValueError:
            raw = b""
        # With every value of the right length, the right byte count means hex digits only.
        if len(raw) == n * words * 8:
            codes = np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(shape)
            return codes, np.ones(n, dtype=np.bool_)
    pattern = _HEX[bits]
    valid = np.fromiter((bool(pattern.fullmatch(v)) for v in values), dtype=np.bool_, count=n)
    padded = "".join(v if ok else "0" * digits for v, ok in zip(values, valid, strict=True))
    codes = np.frombuffer(bytes.fromhex(padded), dtype=">u8").astype(np.uint64).reshape(shape)
    return codes, valid


_NIBBLE = np.full(256, 255, dtype=np.uint8)
_NIBBLE[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16)
_NIBBLE[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16)


def _decode_ascii_hex(text: npt.NDArray[np.uint8]) -> tuple[Codes, npt.NDArray[np.bool_]]:
    """Rows of ASCII hex digits (n, digits) as codes (n, digits / 16) and a validity mask."""
    nibbles = _NIBBLE[text]
    valid = (nibbles != 255).all(axis=1)
    packed = np.ascontiguousarray((nibbles[:, 0::2] << 4) | (nibbles[:, 1::2] & 15))
    return packed.view(">u8").astype(np.uint64), valid


def _query_words(code: npt.ArrayLike | int, words: int) -> Codes:
    if isinstance(code, int):
        if not 0 <= code < 1 << (64 * words):
            raise ValueError(f"code out of range for {64 * words} bits")
        return np.array(
            [(code >> (64 * (words - 1 - i))) & (2**64 - 1) for i in range(words)], dtype=np.uint64
        )
    array = np.asarray(code)
    if array.dtype != np.uint64 or array.size != words:
        raise ValueError(f"a {64 * words}-bit code is {words} uint64 word(s)")
    return array.reshape(words)


def _distances(block: Codes, query: Codes) -> Distances:
    """Hamming distances of the rows of ``block`` (k, words) to ``query`` (words,)."""
    if block.shape[1] == 1:
        counts: Distances = np.bitwise_count(block[:, 0] ^ query[0])
        return counts
    counts = np.bitwise_count(block ^ query)
    # uint16: four words can differ in all 256 bits, which a uint8 sum would wrap to 0.
    # Adding columns is twice as fast as .sum(axis=1) on (k, 4).
    sums: Distances = counts[:, 0].astype(np.uint16)
    for word in range(1, block.shape[1]):
        sums += counts[:, word]
    return sums


# -- layout ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Substring:
    word: int
    shift: int
    width: int


def _split(words: int, parts: int) -> tuple[_Substring, ...]:
    """Cut each 64-bit word into ``parts`` substrings, the wider ones first."""
    base, extra = divmod(64, parts)
    widths = [base + 1] * extra + [base] * (parts - extra)
    subs = []
    for word in range(words):
        shift = 0
        for width in widths:
            subs.append(_Substring(word, shift, width))
            shift += width
    return tuple(subs)


def _radii(radius: int, m: int) -> list[int]:
    """Per-substring radii with ``sum(r_j + 1) = radius + 1``; -1 means 'not probed'."""
    base, extra = divmod(radius + 1, m)
    return [base if j < extra else base - 1 for j in range(m)]


def _ball(width: int, radius: int) -> int:
    return sum(math.comb(width, k) for k in range(radius + 1))


def _plan_cost(subs: Sequence[_Substring], rows: int, radius: int, words: int) -> float:
    probes = candidates = 0.0
    for sub, r in zip(subs, _radii(radius, len(subs)), strict=True):
        if r >= 0:
            ball = _ball(sub.width, min(r, sub.width))
            probes += ball
            candidates += ball * rows / 2.0**sub.width
    return _FIXED_NS + probes * _PROBE_NS + candidates * _CANDIDATE_NS[words]


def choose_substrings(bits: Literal[64, 256], rows: int, radius: int) -> tuple[_Substring, ...]:
    """The cheapest layout for ``rows`` codes at ``radius`` whose offsets tables stay
    within about 8 bytes per row (``2**width <= 2 * rows``)."""
    words = bits // 64
    best: tuple[float, tuple[_Substring, ...]] | None = None
    for parts in range(1, 9):
        subs = _split(words, parts)
        widest = max(s.width for s in subs)
        if widest > MAX_SUBSTRING_BITS or 2**widest > 2 * max(rows, MIN_TABLE_ROWS):
            continue
        cost = _plan_cost(subs, rows, radius, words)
        if best is None or cost < best[0]:
            best = (cost, subs)
    if best is None:  # unreachable: 8 parts of 8 bits always fit
        raise ValueError("no layout fits")
    return best[1]


def _flips(width: int, radius: int) -> npt.NDArray[np.uint64]:
    """Every mask of at most ``radius`` set bits within ``width`` bits."""
    masks = [0]
    for k in range(1, radius + 1):
        masks.extend(sum(1 << b for b in bits) for bits in itertools.combinations(range(width), k))
    return np.array(masks, dtype=np.uint64)


@dataclass(frozen=True)
class _Probes:
    table: npt.NDArray[np.intp]  # index of each probe's substring table in the offsets array
    sub: npt.NDArray[np.intp]  # which substring each probe belongs to
    flip: npt.NDArray[np.uint64]  # bits flipped in the query's substring value


# -- the index ---------------------------------------------------------------------------------


class HammingIndex:
    """Exact radius search over 64- or 256-bit codes by multi-index hashing.

    The rows live in a main part, indexed by bucket tables, and a small delta that is
    scanned and merged into the main part once it holds ``max(MIN_DELTA, rows / 512)``
    rows. Memory beyond the codes and ids: 4 bytes per row per substring (the row
    order) plus the offsets tables (at most about 8 bytes per row), e.g. 15.4 bytes per
    64-bit code at 10 million. Not thread-safe: callers serialise access.
    """

    def __init__(
        self, bits: Literal[64, 256], *, radius: int | None = None, parts: int | None = None
    ) -> None:
        if bits not in (64, 256):
            raise ValueError("bits is 64 or 256")
        if parts is not None and not -(-64 // MAX_SUBSTRING_BITS) <= parts <= 64:
            raise ValueError(f"parts is 3 to 64 (substrings of at most {MAX_SUBSTRING_BITS} bits)")
        # Substrings per 64-bit word; None: chosen from the row count (for benchmarks).
        self.parts = parts
        self.bits: Literal[64, 256] = bits
        self.words = bits // 64
        # The radius most queries use: it picks the layout; any radius can be searched.
        self.radius = radius if radius is not None else (8 if bits == 64 else 31)
        # Main part.
        self._codes: Codes = np.zeros((0, self.words), dtype=np.uint64)
        self._ids: Ids = np.zeros(0, dtype=np.int64)
        self._alive: npt.NDArray[np.bool_] | None = None  # None: every main row alive
        self._dead = 0
        # Delta: buffers with spare capacity, the first ``_delta_rows`` used.
        self._delta_codes: Codes = np.zeros((0, self.words), dtype=np.uint64)
        self._delta_ids: Ids = np.zeros(0, dtype=np.int64)
        self._delta_rows = 0
        # Tables over the main part, or none (then the main part is scanned).
        self._subs: tuple[_Substring, ...] = ()
        self._sub_word = np.zeros(0, dtype=np.intp)
        self._sub_shift = np.zeros(0, dtype=np.uint64)
        self._sub_mask = np.zeros(0, dtype=np.uint64)
        self._table_start: list[int] = []
        self._offsets: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self._order: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self._probes: dict[int, _Probes | None] = {}

    def __len__(self) -> int:
        return len(self._ids) - self._dead + self._delta_rows

    def nbytes(self) -> int:
        """Bytes held beyond the codes and ids: tables, alive mask, spare delta capacity."""
        alive = 0 if self._alive is None else self._alive.nbytes
        spare = (len(self._delta_ids) - self._delta_rows) * (8 + 8 * self.words)
        return int(self._offsets.nbytes + self._order.nbytes + alive + spare)

    def codes_nbytes(self) -> int:
        """Bytes of the codes and ids themselves (what a scan needs too)."""
        used = self._delta_rows * (8 + 8 * self.words)
        return int(self._codes.nbytes + self._ids.nbytes + used)

    def describe(self) -> str:
        if not self._subs:
            return f"{self.bits}-bit, {len(self)} codes, scanned"
        widths = sorted({s.width for s in self._subs}, reverse=True)
        return (
            f"{self.bits}-bit, {len(self)} codes, {len(self._subs)} substrings of "
            + "/".join(map(str, widths))
            + " bits"
        )

    # -- writing

    def add(self, ids: npt.ArrayLike, codes: npt.ArrayLike) -> None:
        """Add codes (uint64, ``(n,)`` for 64 bits or ``(n, 4)`` for 256) under int64 ids."""
        id_array = np.asarray(ids, dtype=np.int64).reshape(-1)
        code_array = np.asarray(codes)
        if code_array.dtype != np.uint64:
            raise ValueError("codes are uint64")
        code_array = code_array.reshape(-1, self.words)
        if len(code_array) != len(id_array):
            raise ValueError("one id per code")
        count, used = len(id_array), self._delta_rows
        if not count:
            return
        if used + count >= self._merge_threshold():
            # Straight into the main part, without a stop in the delta buffers.
            self._merge(
                np.concatenate([self._delta_ids[:used], id_array]),
                np.concatenate([self._delta_codes[:used], code_array]),
            )
            return
        if used + count > len(self._delta_ids):
            capacity = max(2 * len(self._delta_ids), used + count, 1024)
            self._delta_ids = np.resize(self._delta_ids, capacity)
            self._delta_codes = np.resize(self._delta_codes, (capacity, self.words))
        self._delta_ids[used : used + count] = id_array
        self._delta_codes[used : used + count] = code_array
        self._delta_rows += count

    def remove(self, ids: npt.ArrayLike) -> int:
        """Forget every row under these ids; returns how many rows were dropped."""
        gone = np.asarray(ids, dtype=np.int64).reshape(-1)
        delta_ids = self._delta_ids[: self._delta_rows]
        keep = ~np.isin(delta_ids, gone)
        dropped = int(len(keep) - keep.sum())
        if dropped:
            kept = int(keep.sum())
            self._delta_ids[:kept] = delta_ids[keep]
            self._delta_codes[:kept] = self._delta_codes[: self._delta_rows][keep]
            self._delta_rows = kept
        hit = np.isin(self._ids, gone)
        if self._alive is not None:
            hit &= self._alive
        count = int(hit.sum())
        if count:
            if self._alive is None:
                self._alive = np.ones(len(self._ids), dtype=np.bool_)
            self._alive[hit] = False
            self._dead += count
            if self._dead * 4 > len(self._ids):
                used = self._delta_rows
                self._merge(self._delta_ids[:used], self._delta_codes[:used], rebuild=True)
        return dropped + count

    def _merge_threshold(self) -> int:
        if len(self._ids) < MIN_TABLE_ROWS:
            return MIN_TABLE_ROWS
        return max(MIN_DELTA, len(self._ids) // DELTA_FRACTION)

    def _merge(self, new_ids: Ids, new_codes: Codes, *, rebuild: bool = False) -> None:
        """Move new rows (the delta) into the main part: insert them into the tables when
        these keep their layout, else build the tables afresh (dropping dead rows)."""
        old, new = len(self._ids), len(new_ids)
        rows = old - self._dead + new
        subs: tuple[_Substring, ...] = ()
        if rows >= MIN_TABLE_ROWS:
            subs = (
                _split(self.words, self.parts)
                if self.parts
                else choose_substrings(self.bits, rows, self.radius)
            )
        rebuild = rebuild or bool(self._dead) or subs != self._subs or new * 4 > old
        if self._alive is not None:
            self._alive = np.concatenate([self._alive, np.ones(new, dtype=np.bool_)])
        if not rebuild:
            self._insert_into_tables(new_codes)
        self._codes = np.concatenate([self._codes, new_codes]) if old else new_codes
        self._ids = np.concatenate([self._ids, new_ids]) if old else new_ids
        self._delta_codes = np.zeros((0, self.words), dtype=np.uint64)
        self._delta_ids = np.zeros(0, dtype=np.int64)
        self._delta_rows = 0
        if rebuild:
            self._build(subs)

    def _keys(self, sub: _Substring, codes: Codes) -> Codes:
        return (codes[:, sub.word] >> np.uint64(sub.shift)) & np.uint64((1 << sub.width) - 1)

    def _build(self, subs: tuple[_Substring, ...]) -> None:
        if self._alive is not None:
            self._ids = self._ids[self._alive]
            self._codes = self._codes[self._alive]
            self._alive, self._dead = None, 0
        rows = len(self._ids)
        if rows >= 1 << 31:
            raise ValueError("at most 2**31 - 1 rows")
        self._subs = subs
        self._sub_word = np.array([s.word for s in subs], dtype=np.intp)
        self._sub_shift = np.array([s.shift for s in subs], dtype=np.uint64)
        self._sub_mask = np.array([(1 << s.width) - 1 for s in subs], dtype=np.uint64)
        self._table_start = list(itertools.accumulate((2**s.width + 1 for s in subs), initial=0))
        self._offsets = np.zeros(self._table_start[-1], dtype=np.int32)
        self._order = np.empty(len(subs) * rows, dtype=np.int32)
        self._probes = {}
        row_numbers = np.arange(rows, dtype=np.uint64)
        for j, sub in enumerate(subs):
            keys = self._keys(sub, self._codes)
            start = self._table_start[j]
            counts = np.bincount(keys.astype(np.intp), minlength=2**sub.width)
            np.cumsum(counts, out=self._offsets[start + 1 : start + 2**sub.width + 1])
            # Sorting (key << 32 | row) as plain uint64 is several times faster than an
            # argsort of the keys (numpy sorts uint64 with SIMD).
            packed = (keys << np.uint64(32)) | row_numbers
            packed.sort()
            self._order[j * rows : (j + 1) * rows] = packed.astype(np.uint32).view(np.int32)

    def _insert_into_tables(self, delta_codes: Codes) -> None:
        """Insert new rows at the end of their buckets: one pass over the tables, no sort
        of the old rows."""
        old, new = len(self._ids), len(delta_codes)
        total = old + new
        new_rows = np.arange(old, total, dtype=np.int32)
        order = np.empty(len(self._subs) * total, dtype=np.int32)
        for j, sub in enumerate(self._subs):
            keys = self._keys(sub, delta_codes).astype(np.intp)
            by_key = np.argsort(keys, kind="stable")
            start = self._table_start[j]
            offsets = self._offsets[start : start + 2**sub.width + 1]
            # Where each new row lands in the grown table: its bucket's end, moved up by
            # the new rows placed before it.
            at = offsets[keys[by_key] + 1] + np.arange(new)
            segment = order[j * total : (j + 1) * total]
            old_places = np.ones(total, dtype=np.bool_)
            old_places[at] = False
            segment[at] = new_rows[by_key]
            segment[old_places] = self._order[j * old : (j + 1) * old]
            offsets[1:] += np.cumsum(np.bincount(keys, minlength=2**sub.width)).astype(np.int32)
        self._order = order

    # -- reading

    def _probes_for(self, radius: int) -> _Probes | None:
        """Probe keys for ``radius``, or None when a scan of the main part is cheaper."""
        if radius in self._probes:
            return self._probes[radius]
        rows = len(self._ids)
        radii = _radii(radius, len(self._subs))
        probe_count = sum(
            _ball(s.width, min(r, s.width))
            for s, r in zip(self._subs, radii, strict=True)
            if r >= 0
        )
        cost = _plan_cost(self._subs, rows, radius, self.words)
        probes: _Probes | None = None
        if cost < rows * _SCAN_ROW_NS[self.words] and probe_count <= 1 << 20:
            tables, subs, flips = [], [], []
            for j, (sub, r) in enumerate(zip(self._subs, radii, strict=True)):
                if r < 0:
                    continue
                masks = _flips(sub.width, min(r, sub.width))
                flips.append(masks)
                subs.append(np.full(len(masks), j, dtype=np.intp))
                tables.append(np.full(len(masks), self._table_start[j], dtype=np.intp))
            probes = _Probes(
                table=np.concatenate(tables),
                sub=np.concatenate(subs),
                flip=np.concatenate(flips),
            )
        self._probes[radius] = probes
        return probes

    def _table_candidates(self, query: Codes, probes: _Probes) -> npt.NDArray[np.intp]:
        values = (query[self._sub_word] >> self._sub_shift) & self._sub_mask
        keys = (values[probes.sub] ^ probes.flip).astype(np.intp) + probes.table
        starts = self._offsets[keys].astype(np.intp)
        lengths = self._offsets[keys + 1] - starts
        starts += probes.sub * len(self._ids)
        ends = np.cumsum(lengths)
        total = int(ends[-1]) if len(ends) else 0
        # The ranges [start, start + length) concatenated, without a Python loop.
        positions = np.repeat(starts - (ends - lengths), lengths) + np.arange(total)
        return self._order[positions].astype(np.intp)

    def search(
        self, code: npt.ArrayLike | int, radius: int, *, limit: int | None = None
    ) -> list[tuple[int, int]]:
        """Every ``(id, distance)`` within ``radius`` of ``code``, by distance then id.
        ``limit``: only the first ``limit`` ids, each once (at its nearest)."""
        if radius < 0:
            raise ValueError("radius >= 0")
        query = _query_words(code, self.words)
        probes = self._probes_for(radius) if self._subs else None
        if probes is not None:
            rows = self._table_candidates(query, probes)
            distances = _distances(self._codes[rows], query)
            near = distances <= radius
            # A row reached through several substrings comes once per substring.
            rows, first = np.unique(rows[near], return_index=True)
            main_distances = distances[near][first]
        else:
            distances = _distances(self._codes, query)
            rows = np.flatnonzero(distances <= radius)
            main_distances = distances[rows]
        if self._alive is not None:
            keep = self._alive[rows]
            rows, main_distances = rows[keep], main_distances[keep]
        delta = _distances(self._delta_codes[: self._delta_rows], query)
        delta_rows = np.flatnonzero(delta <= radius)
        ids = np.concatenate([self._ids[rows], self._delta_ids[delta_rows]])
        found = np.concatenate([main_distances, delta[delta_rows]])
        order = np.lexsort((ids, found))
        if limit is not None:
            # The first row of each id in that order is its nearest.
            _, first = np.unique(ids[order], return_index=True)
            order = order[np.sort(first)[:limit]]
        return [(int(ids[i]), int(found[i])) for i in order]


# -- the database view -------------------------------------------------------------------------

# At most this many id gaps are remembered (the newest win), re-read this many per query
# (SQLite limits expression depth to 1000).
_MAX_GAPS = 5000
_GAPS_PER_QUERY = 200
# A transaction gets its id just after its first row takes a sequence value: a gap is
# kept at least this long whatever the transaction horizon says.
_GAP_GRACE_SECONDS = 5.0
_BATCH = 50_000
# A refresh reading more known-list rows than this (a large import) is remembered as
# "everything changed", not row by row: the catch-up then searches the whole index.
_RECENT_KNOWN_ROWS = 100_000
_MEDIA, _KNOWN = "media", "known"


class _ListRow(NamedTuple):
    """A hash list as a refresh read it."""

    created_at: dt.datetime
    enabled: bool
    own: bool


@dataclass(frozen=True)
class NearQuery:
    """The perceptual hashes of one media item to look up (``NearDuplicates.lookup``)."""

    phash: str | None
    pdq: str | None
    pdq_quality: int | None
    exclude_media_id: int | None = None


@dataclass(frozen=True)
class NearMatch:
    source: str  # "seen" for media rows, else the hash list's name
    hash_type: str  # "phash" | "pdq"
    distance: int
    media_id: int | None
    known_entry_id: int | None
    list_id: int | None


@dataclass(frozen=True)
class KnownLoaded:
    """What a ``NearDuplicates`` read of the known lists within some time
    (``known_loaded``): the perceptual codes of the rows it read, or ``everything`` when
    it cannot tell them apart (it loaded the lists whole, saw a list enabled, or read
    more than 100,000 rows at once, then)."""

    everything: bool
    rows: int = 0  # rows read, with or without a perceptual hash
    codes: dict[HashType, tuple[Ids, Codes]] = field(default_factory=dict)
    lists: frozenset[int] = frozenset()  # the lists those rows are on


@dataclass(frozen=True)
class _KnownLoad:
    at: float
    everything: bool
    rows: int
    codes: dict[HashType, tuple[Ids, Codes]]
    lists: frozenset[int]


@dataclass
class _Gap:
    low: int
    high: int
    found_at: float
    # PostgreSQL: the next transaction id when the gap was found. Every transaction that
    # could still fill it is older, so once the oldest running one is not, it is a hole.
    horizon: int | None


@dataclass
class _Cursor:
    """How far one table has been read: every id <= ``high`` except the ``gaps``.

    A gap is an id range below ``high`` that held no row when read: a transaction still
    in progress (on PostgreSQL ids are taken at insert and rows appear at commit, so
    they appear out of id order), one rolled back, a conflict that used up an id, or a
    deleted row. Gaps are read again on every refresh until no transaction can fill
    them: on PostgreSQL until every transaction running when the gap was found has
    ended; elsewhere (SQLite commits one writer at a time) for ``settle_seconds``.
    """

    high: int = 0
    started: bool = False
    gaps: list[_Gap] = field(default_factory=list)
    # SQLite: what the row at ``high`` was when read (see ``_Table.identity``).
    at_high: tuple[Any, ...] | None = None

    def advance(self, ids: npt.NDArray[np.int64], now: float, horizon: int | None) -> None:
        """Record the ids read above ``high``; the ones skipped become gaps."""
        if not len(ids):
            return
        ids = np.sort(ids)
        previous = np.concatenate([[self.high], ids[:-1]])
        jumps = np.flatnonzero(ids - previous > 1)
        self.gaps += [_Gap(int(previous[i]) + 1, int(ids[i]) - 1, now, horizon) for i in jumps]
        self.high = int(ids[-1])

    def fill(self, found: npt.NDArray[np.int64]) -> None:
        """Take the ids found inside gaps out of them."""
        if not len(found):
            return
        found = np.sort(found)
        gaps = []
        for gap in self.gaps:
            inside = found[
                np.searchsorted(found, gap.low) : np.searchsorted(found, gap.high, "right")
            ]
            edges = [gap.low - 1, *(int(i) for i in inside), gap.high + 1]
            gaps += [
                _Gap(a + 1, b - 1, gap.found_at, gap.horizon)
                for a, b in itertools.pairwise(edges)
                if b - a > 1
            ]
        self.gaps = gaps

    def settle(self, now: float, oldest_running: int | None, settle_seconds: float) -> None:
        """Forget the gaps no transaction can fill any more (``oldest_running`` was read
        before the gaps were last read)."""

        def open_(gap: _Gap) -> bool:
            if gap.low > self.high:
                return False
            age = now - gap.found_at
            if gap.horizon is not None and oldest_running is not None:
                return gap.horizon > oldest_running or age < _GAP_GRACE_SECONDS
            return age < settle_seconds

        self.gaps = [gap for gap in self.gaps if open_(gap)]
        if len(self.gaps) > _MAX_GAPS:
            self.gaps = sorted(self.gaps, key=lambda gap: gap.low)[-_MAX_GAPS:]


def _transactions(session: Session) -> tuple[int, int] | None:
    """PostgreSQL: (oldest running transaction id, next transaction id)."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return None
    oldest, upcoming = connection.execute(
        text(
            "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint"
            " FROM pg_current_snapshot() AS s"
        )
    ).one()
    return int(oldest), int(upcoming)


def _batches(session: Session, statement: Select[*tuple[Any, ...]]) -> Iterator[Sequence[Any]]:
    """Rows in batches through the session's connection (its transaction), streamed by a
    server-side cursor where the backend has one; Core rows, without ORM loading."""
    options = {"stream_results": True, "yield_per": _BATCH}
    result = session.connection().execute(statement.execution_options(**options))
    yield from result.partitions()


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_COPY_HEADER = len(_COPY_SIGNATURE) + 8  # signature, flags, header extension length
_COPY_TRAILER = b"\xff\xff"
_COPY_CHUNK = 4 << 20


def _copy_ids(session: Session, query: str, params: tuple[object, ...]) -> Iterator[Ids]:
    """PostgreSQL: ``(id bigint)`` rows through ``COPY ... (FORMAT BINARY)``."""
    row = np.dtype([("fields", ">i2"), ("id_size", ">i4"), ("id", ">i8")])
    for data in _copy_rows(session, query, params, row.itemsize):
        rows = np.frombuffer(data, dtype=row)
        if not ((rows["fields"] == 1).all() and (rows["id_size"] == 8).all()):
            raise ValueError("unexpected COPY row layout")
        yield rows["id"].astype(np.int64)


def _copy_rows(
    session: Session, query: str, params: tuple[object, ...], size: int
) -> Iterator[bytes]:
    """The rows of a binary COPY of fixed-size rows (``size`` bytes), in chunks of whole
    rows, header and trailer checked and taken off."""
    connection: Any = session.connection().connection.driver_connection
    buffer = bytearray()
    header = False
    with connection.cursor() as cursor, cursor.copy(query, params) as copy:
        for chunk in copy:
            buffer += chunk
            if not header:
                if len(buffer) < _COPY_HEADER:
                    continue
                if not buffer.startswith(_COPY_SIGNATURE):
                    raise ValueError("not a binary COPY stream")
                extension = int.from_bytes(buffer[_COPY_HEADER - 4 : _COPY_HEADER], "big")
                if len(buffer) < _COPY_HEADER + extension:
                    continue
                del buffer[: _COPY_HEADER + extension]
                header = True
            if len(buffer) >= _COPY_CHUNK:
                whole = len(buffer) // size * size
                yield bytes(buffer[:whole])
                del buffer[:whole]
    whole = len(buffer) // size * size
    if whole:
        yield bytes(buffer[:whole])
    if buffer[whole:] != _COPY_TRAILER:
        raise ValueError("unexpected end of a binary COPY stream")


def _copy_codes(
    session: Session, query: str, params: tuple[object, ...], digits: int
) -> Iterator[tuple[Ids, Codes]]:
    """PostgreSQL: ``(id bigint, hex text)`` rows through ``COPY ... (FORMAT BINARY)``.

    Every value has ``digits`` bytes (the query says so), so every row has the same size
    and a chunk of rows is decoded by numpy at once: several times faster than fetching
    rows one by one. Rows whose value is not hex are dropped.
    """
    row = np.dtype(
        [
            ("fields", ">i2"),
            ("id_size", ">i4"),
            ("id", ">i8"),
            ("value_size", ">i4"),
            ("value", f"S{digits}"),
        ]
    )
    for data in _copy_rows(session, query, params, row.itemsize):
        rows = np.frombuffer(data, dtype=row)
        if not (
            (rows["fields"] == 2).all()
            and (rows["id_size"] == 8).all()
            and (rows["value_size"] == digits).all()
        ):
            raise ValueError("unexpected COPY row layout")
        text = np.frombuffer(rows["value"].tobytes(), dtype=np.uint8).reshape(len(rows), digits)
        codes, valid = _decode_ascii_hex(text)
        ids = rows["id"].astype(np.int64)
        yield ids[valid], codes[valid]


class NearDuplicates:
    """Near-duplicate lookups against media seen here and the known lists.

    One per process (``get_near_duplicates``). Rows other processes and machines commit
    are loaded at most ``refresh_seconds`` later; every hit is checked against the
    database before it is returned. Thread-safe.
    """

    def __init__(
        self,
        *,
        phash_radius: int,
        pdq_radius: int,
        pdq_min_quality: int,
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        settle_seconds: float = 600.0,
        settled_ids: int = 100_000,
        recent_seconds: float = 0.0,
        near_limit: int = 20,
    ) -> None:
        self.phash_radius = phash_radius
        # Near matches per query and hash type, to media seen before and to each list's
        # entries: the nearest.
        self.near_limit = near_limit
        self.pdq_radius = pdq_radius
        self.pdq_min_quality = pdq_min_quality
        self.refresh_seconds = refresh_seconds
        # Backends without transaction ids (SQLite): how long an id gap is re-read.
        self.settle_seconds = settle_seconds
        # At the first load, ids this far below the newest are read in bulk and taken as
        # settled; only the newer ones are watched for gaps.
        self.settled_ids = settled_ids
        # How long what a refresh read of the known lists is remembered (known_loaded).
        self.recent_seconds = recent_seconds
        self._known_log: list[_KnownLoad] = []
        self._clock = clock
        self._index = {
            (source, hash_type): HammingIndex(
                64 if hash_type == HashType.phash else 256,
                radius=phash_radius if hash_type == HashType.phash else pdq_radius,
            )
            for source in (_MEDIA, _KNOWN)
            for hash_type in (HashType.phash, HashType.pdq)
        }
        self._cursors = {_MEDIA: _Cursor(), _KNOWN: _Cursor()}
        self._lists: dict[int, _ListRow] | None = None  # as the last refresh read them
        self._refreshed_at: float | None = None
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return sum(len(index) for index in self._index.values())

    def nbytes(self) -> int:
        """Memory of the indexes: codes, ids and tables."""
        return sum(index.nbytes() + index.codes_nbytes() for index in self._index.values())

    # -- loading

    def refresh(self, session: Session, *, force: bool = False) -> None:
        """Load the media and known-list rows committed since the last refresh; at most
        every ``refresh_seconds`` unless ``force``. Reads only."""
        with self._lock:
            now = self._clock()
            if (
                not force
                and self._refreshed_at is not None
                and now - self._refreshed_at < self.refresh_seconds
            ):
                return
            # All or nothing: a refresh that fails half-way (a lost connection, a time
            # limit) leaves the cursors, lists and indexes as they were, so the next one
            # reads again what this one had read (rows of gaps, a first load's settled
            # rows) rather than take them for read.
            saved = (copy.deepcopy(self._cursors), self._lists, dict(self._index))
            try:
                before = _transactions(session)
                changed = self._check_lists(session)
                whole = changed or not self._cursors[_KNOWN].started
                tables = (_MediaTable(self), _KnownTable(self))
                new_ids = [self._read(session, table, now, before) for table in tables]
                after = _transactions(session)
            except BaseException:
                self._cursors, self._lists, self._index = saved
                raise
            self._note_known(now, tables[1], everything=whole)
            for table, ids in zip(tables, new_ids, strict=True):
                cursor = self._cursors[table.kind]
                cursor.advance(ids, now, after[1] if after else None)
                if session.connection().dialect.name != "postgresql":
                    cursor.at_high = table.identity(session, cursor.high)
                table.flush()
            self._refreshed_at = now

    def _start_over(self, kind: str) -> _Cursor:
        """Forget what was read of one table (``_MEDIA`` or ``_KNOWN``): the next read is
        a first load. Returns its new cursor."""
        cursor = self._cursors[kind] = _Cursor()
        for hash_type in (HashType.phash, HashType.pdq):
            old = self._index[(kind, hash_type)]
            self._index[(kind, hash_type)] = HammingIndex(old.bits, radius=old.radius)
        return cursor

    @property
    def own_lists(self) -> frozenset[int]:
        """The hotline's own list(s), as the last refresh read the lists."""
        return frozenset(i for i, row in (self._lists or {}).items() if row.own)

    def _check_lists(self, session: Session) -> bool:
        """Start the known hashes afresh when a list was removed: its entries go, and on
        SQLite the next rows may take their ids again (max(id) + 1). Returns whether
        they were, or a list was enabled since the last refresh: either way the rows
        matched from now on are not only the ones read now (``known_loaded``)."""
        statement = select(
            col(HashList.id), col(HashList.created_at), col(HashList.enabled), col(HashList.own)
        )
        lists = {
            int(i or 0): _ListRow(at, bool(enabled), bool(own))
            for i, at, enabled, own in session.connection().execute(statement)
        }
        before, self._lists = self._lists, lists
        if before is None:
            return False
        if any(
            i not in lists or lists[i].created_at != row.created_at for i, row in before.items()
        ):
            log.info("a hash list was removed: reloading the known hashes")
            self._start_over(_KNOWN)
            return True
        return any(
            row.enabled and i in before and not before[i].enabled for i, row in lists.items()
        )

    def _note_known(self, now: float, table: _Table, *, everything: bool) -> None:
        """Remember what this refresh read of the known lists, for ``known_loaded``."""
        if self.recent_seconds <= 0:
            return
        self._known_log = [load for load in self._known_log if now - load.at <= self.recent_seconds]
        lists = frozenset(table.lists)
        if everything or table.read > _RECENT_KNOWN_ROWS:
            self._known_log.append(_KnownLoad(now, True, table.read, {}, lists))
        elif table.read:
            self._known_log.append(_KnownLoad(now, False, table.read, table.gathered(), lists))

    def known_loaded(self, seconds: float) -> KnownLoaded:
        """What this index read of the known lists within the last ``seconds``: a row
        another process committed then may have been missed by a worker whose index was
        older. ``everything`` when it cannot tell: the lists were loaded whole or a list
        enabled in that time, the index never loaded, or ``seconds`` is longer than it
        remembers (``recent_seconds``)."""
        with self._lock:
            now = self._clock()
            if self._refreshed_at is None or seconds > self.recent_seconds:
                return KnownLoaded(everything=True)
            loads = [load for load in self._known_log if now - load.at <= seconds]
            rows = sum(load.rows for load in loads)
            lists = frozenset().union(*(load.lists for load in loads))
            if any(load.everything for load in loads):
                return KnownLoaded(everything=True, rows=rows, lists=lists)
            codes: dict[HashType, tuple[Ids, Codes]] = {}
            for hash_type in (HashType.phash, HashType.pdq):
                parts = [load.codes[hash_type] for load in loads if hash_type in load.codes]
                if parts:
                    codes[hash_type] = (
                        np.concatenate([ids for ids, _ in parts]),
                        np.concatenate([found for _, found in parts]),
                    )
            return KnownLoaded(everything=False, rows=rows, codes=codes, lists=lists)

    def search_known(self, hash_type: HashType, code: Codes, radius: int) -> list[tuple[int, int]]:
        """(entry id, distance) of the known-list rows in the index within ``radius`` of
        ``code``, not checked against the database (``lookup`` checks its hits)."""
        with self._lock:
            return self._index[(_KNOWN, hash_type)].search(code, radius)

    def _read(
        self, session: Session, table: _Table, now: float, before: tuple[int, int] | None
    ) -> Ids:
        """Read the table's gaps again, then the rows above its watermark; returns the ids
        read above the watermark."""
        cursor = self._cursors[table.kind]
        # SQLite hands out max(id) + 1: the id of a row deleted, or of one a refresh read
        # inside a transaction that was then rolled back, is taken by the next row. If
        # the row at the watermark is not the one read, start over.
        sqlite = session.connection().dialect.name != "postgresql"
        if sqlite and cursor.started and table.identity(session, cursor.high) != cursor.at_high:
            log.info("%s rows replaced under their ids: reloading them", table.name)
            cursor = self._start_over(table.kind)
        for start in range(0, len(cursor.gaps), _GAPS_PER_QUERY):
            gaps = cursor.gaps[start : start + _GAPS_PER_QUERY]
            where = or_(*(table.id.between(gap.low, gap.high) for gap in gaps))
            found: list[int] = []
            for rows in _batches(session, table.rows(where)):
                table.add(rows)
                table.read += len(rows)
                found += (int(row[0]) for row in rows)
            if found:
                log.info("%d %s rows committed out of id order", len(found), table.name)
            cursor.fill(np.array(found, dtype=np.int64))
        cursor.settle(now, before[0] if before else None, self.settle_seconds)

        top = table.top(session)
        if not cursor.started:
            settled = max(top - self.settled_ids, 0)
            if session.connection().dialect.driver == "psycopg":
                for hash_type, query, params in table.copies(settled):
                    digits = 16 if hash_type == HashType.phash else 64
                    for ids, codes in _copy_codes(session, query, params, digits):
                        table.pending(hash_type, ids, codes)
                holes = table.holes(session, settled)
                if holes is not None:
                    # Ids at or below the settled point that no committed row holds yet:
                    # an import's block of ids is taken (and committed) at its start, its
                    # rows appear at its end. Gaps, read again while a transaction
                    # running now may still fill them.
                    held, horizon = holes
                    cursor.advance(held, now, horizon)
                    if cursor.high < settled:
                        cursor.gaps.append(_Gap(cursor.high + 1, settled, now, horizon))
            else:
                for rows in _batches(session, table.rows(table.id <= settled, settled_only=True)):
                    table.add(rows)
                    table.read += len(rows)
            cursor.high, cursor.started = settled, True
        elif top < cursor.high:
            # Media rows are not deleted, but should the newest go, SQLite would hand
            # their ids out again: read from the top.
            cursor.high = top
        # Unordered (sorting millions of rows costs the database more than numpy): the
        # gaps are worked out once every id is in.
        new_ids = [np.zeros(0, dtype=np.int64)]
        for rows in _batches(session, table.rows(table.id > cursor.high)):
            table.add(rows)
            table.read += len(rows)
            new_ids.append(np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows)))
        return np.concatenate(new_ids)

    # -- matching

    def lookup(
        self,
        session: Session,
        *,
        phash: str | None,
        pdq: str | None,
        pdq_quality: int | None,
        exclude_media_id: int | None = None,
    ) -> list[NearMatch]:
        """Media seen here and enabled known-list entries near these hashes: pHash matches
        then PDQ, each nearest first, list entries before media. Refreshes first
        (rate-limited). A PDQ hash below ``pdq_min_quality`` is not matched, nor a pHash
        that says nothing of its picture (``informative_phash``). Per hash type, of the
        media and of each list's entries, the ``near_limit`` nearest (the lowest ids
        among equals). Reads only."""
        query = NearQuery(phash, pdq, pdq_quality, exclude_media_id)
        return self.lookup_many(session, [query])[0]

    def lookup_many(
        self, session: Session, queries: Sequence[NearQuery], *, skip: Collection[int] = ()
    ) -> list[list[NearMatch]]:
        """``lookup`` of each query, in order. The index's hits of all of them are checked
        in the database together: one statement per table and hash type (per 500 hits),
        however many queries have hits, not one per query (a page of thirty copies of
        known pictures made up to 120). ``skip``: media never returned (those the page
        being recorded shows for the first time), so they take none of the
        ``near_limit`` nearest places."""
        if not queries:
            return []
        # Of the media, the nearest, with a margin for rows changed since, the item
        # itself and those skipped.
        nearest = 2 * self.near_limit + 1 + len(skip)
        self.refresh(session)
        searches: list[tuple[int, HashType, Codes, int, list[int], list[int]]] = []
        for n, query in enumerate(queries):
            wanted: list[tuple[HashType, Codes, int]] = []
            if query.phash is not None:
                code = np.array([phash_to_code(query.phash)])
                if informative_phash(code)[0]:
                    wanted.append((HashType.phash, code, self.phash_radius))
            if query.pdq is not None and (query.pdq_quality or 0) >= self.pdq_min_quality:
                wanted.append((HashType.pdq, pdq_to_code(query.pdq), self.pdq_radius))
            for hash_type, code, radius in wanted:
                with self._lock:
                    media = self._index[(_MEDIA, hash_type)].search(code, radius, limit=nearest)
                    known = self._index[(_KNOWN, hash_type)].search(code, radius)
                media_ids = [i for i, _ in media if i != query.exclude_media_id and i not in skip]
                known_ids = list(dict.fromkeys(i for i, _ in known))
                if media_ids or known_ids:
                    searches.append((n, hash_type, code, radius, media_ids, known_ids))
        results: list[list[NearMatch]] = [[] for _ in queries]
        for hash_type in (HashType.phash, HashType.pdq):
            mine = [search for search in searches if search[1] == hash_type]
            if not mine:
                continue
            media_rows = self._media_rows(session, hash_type, [i for m in mine for i in m[4]])
            known_rows = self._known_rows(session, hash_type, [i for m in mine for i in m[5]])
            for n, _, code, radius, media_ids, known_ids in mine:
                seen: list[NearMatch] = []
                for media_id in media_ids:
                    # The item's own hash and those of its later frames: the nearest.
                    distances = [
                        d
                        for value in media_rows.get(media_id, ())
                        if (d := _distance_to(value, hash_type, code)) is not None
                    ]
                    distance = min(distances, default=None)
                    if distance is not None and distance <= radius:
                        seen.append(NearMatch("seen", hash_type, distance, media_id, None, None))
                seen.sort(key=lambda match: (match.distance, match.media_id or 0))
                results[n] += seen[: self.near_limit]
                listed: dict[int, list[NearMatch]] = {}
                for known_id in known_ids:
                    found = known_rows.get(known_id)
                    if found is None:
                        continue
                    list_id, value, name = found
                    distance = _distance_to(value, hash_type, code)
                    if distance is not None and distance <= radius:
                        listed.setdefault(list_id, []).append(
                            NearMatch(name, hash_type, distance, None, known_id, list_id)
                        )
                for entries in listed.values():  # of each list, the nearest
                    entries.sort(key=lambda match: (match.distance, match.known_entry_id or 0))
                    results[n] += entries[: self.near_limit]
        for matches in results:
            matches.sort(key=_match_order)
        return results

    def _media_rows(
        self, session: Session, hash_type: HashType, ids: list[int]
    ) -> dict[int, list[str]]:
        """The hits' hashes as the database has them now (rows may be gone or changed):
        each item's own and those of its later frames (``MediaFrame``); PDQ hashes below
        the minimum quality are left out."""
        found: dict[int, list[str]] = {}
        for chunk in _chunks(sorted(set(ids)), 500):
            for media_id, value, quality in session.execute(_hashes_of(hash_type, chunk)):
                if value is None:
                    continue
                if hash_type == HashType.pdq and (quality or 0) < self.pdq_min_quality:
                    continue
                found.setdefault(int(media_id), []).append(str(value))
        return found

    def _known_rows(
        self, session: Session, hash_type: HashType, ids: list[int]
    ) -> dict[int, tuple[int, str | None, str]]:
        """The hits whose list is enabled, as the database has them now: (list id, hash,
        list name) by entry id."""
        found: dict[int, tuple[int, str | None, str]] = {}
        for chunk in _chunks(sorted(set(ids)), 500):
            statement = (
                select(
                    col(KnownEntry.id),
                    col(KnownEntry.list_id),
                    col(getattr(KnownEntry, hash_type.value)),
                    col(HashList.name),
                )
                .join(HashList, col(HashList.id) == col(KnownEntry.list_id))
                .where(col(KnownEntry.id).in_(chunk))
                .where(col(HashList.enabled).is_(True))
            )
            for known_id, list_id, value, name in session.execute(statement):
                found[int(known_id)] = (int(list_id), value, str(name))
        return found


def _match_order(match: NearMatch) -> tuple[int, ...]:
    return (
        match.hash_type != HashType.phash,
        match.distance,
        match.known_entry_id is None,
        match.list_id or 0,
        match.known_entry_id or 0,
        match.media_id or 0,
    )


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _hashes_of(hash_type: HashType, ids: list[int]) -> Select[*tuple[Any, ...]]:
    """(media id, hash, PDQ quality) of the media ``ids`` and of their later frames."""
    if hash_type == HashType.phash:
        own, framed = col(Media.phash), col(MediaFrame.phash)
    else:
        own, framed = col(Media.pdq), col(MediaFrame.pdq)
    items = select(col(Media.id), own, col(Media.pdq_quality)).where(col(Media.id).in_(ids))
    frames = select(col(MediaFrame.media_id), framed, col(MediaFrame.pdq_quality)).where(
        col(MediaFrame.media_id).in_(ids)
    )
    return cast("Select[*tuple[Any, ...]]", items.union_all(frames))


def _distance_to(value: str | None, hash_type: HashType, query: Codes) -> int | None:
    if value is None:
        return None
    bits: Literal[64, 256] = 64 if hash_type == HashType.phash else 256
    codes, valid = hex_to_codes([value], bits)
    if not valid[0]:
        return None
    return int(_distances(codes.reshape(1, -1), query.reshape(-1))[0])


class _Table:
    """How one table's rows are read and indexed."""

    name: str
    kind: str  # _MEDIA or _KNOWN

    @property
    def id(self) -> Any:
        """The id column."""
        raise NotImplementedError

    def __init__(self, owner: NearDuplicates) -> None:
        self.owner = owner
        self.read = 0  # rows read (but those of a first load by COPY)
        self.lists: set[int] = set()  # the lists of the known-list rows read
        self._pending: dict[HashType, list[tuple[Ids, Codes]]] = {}

    def gathered(self) -> dict[HashType, tuple[Ids, Codes]]:
        """The codes read so far (and not yet flushed), by hash type: (ids, codes)."""
        return {
            hash_type: (
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
            )
            for hash_type, parts in self._pending.items()
            if parts
        }

    def flush(self) -> None:
        """Hand the rows read so far to the indexes, one add per index (one merge)."""
        for hash_type, (ids, codes) in self.gathered().items():
            self.owner._index[(self.kind, hash_type)].add(ids, codes)
        self._pending = {}

    def top(self, session: Session) -> int:
        """The highest id in the table (or above it)."""
        return int(session.connection().execute(select(func.max(self.id))).scalar() or 0)

    def rows(
        self, where: ColumnElement[bool], *, settled_only: bool = False
    ) -> Select[*tuple[Any, ...]]:
        raise NotImplementedError

    def add(self, rows: Sequence[Any]) -> None:
        raise NotImplementedError

    def copies(self, settled: int) -> list[tuple[HashType, str, tuple[object, ...]]]:
        """PostgreSQL COPY queries of ``(id, value)`` for ids <= ``settled``, by hash type."""
        raise NotImplementedError

    def identity(self, session: Session, row_id: int) -> tuple[Any, ...] | None:
        """What the row with this id is (None: no such row), to tell it from another
        row under the same id."""
        raise NotImplementedError

    def holes(self, session: Session, settled: int) -> tuple[Ids, int] | None:
        """PostgreSQL, first load: every id <= ``settled`` a committed row holds, and the
        next transaction id after reading them; None where ids below the top are never
        held back (``top`` is then the highest committed id, well above ``settled``)."""
        return None

    def pending(self, hash_type: HashType, ids: Ids, codes: Codes) -> None:
        codes = codes.reshape(len(ids), -1)
        if hash_type == HashType.phash:
            keep = informative_phash(codes[:, 0])
            ids, codes = ids[keep], codes[keep]
        if len(ids):
            self._pending.setdefault(hash_type, []).append((ids, codes))

    def _add(self, hash_type: HashType, pairs: Iterable[tuple[int, str]]) -> None:
        pairs = list(pairs)
        if not pairs:
            return
        bits: Literal[64, 256] = 64 if hash_type == HashType.phash else 256
        codes, valid = hex_to_codes([value for _, value in pairs], bits)
        ids = np.fromiter((i for i, _ in pairs), dtype=np.int64, count=len(pairs))
        if not valid.all():
            log.warning(
                "%d malformed %s values in %s skipped", int((~valid).sum()), hash_type, self.name
            )
        self.pending(hash_type, ids[valid], codes[valid])


class _MediaTable(_Table):
    name = "media"
    kind = _MEDIA

    @property
    def id(self) -> Any:
        return col(Media.id)

    def rows(
        self, where: ColumnElement[bool], *, settled_only: bool = False
    ) -> Select[*tuple[Any, ...]]:
        """The media rows ``where`` says, and the later frames of those that have any
        (rows of the media item's id: a frame is indexed as its item). Frames are written
        with their item, in its transaction, so they appear together."""
        statement = select(col(Media.id), col(Media.phash), col(Media.pdq), col(Media.pdq_quality))
        if settled_only:
            statement = statement.where(col(Media.phash).is_not(None) | col(Media.pdq).is_not(None))
        frames = select(
            col(MediaFrame.media_id),
            col(MediaFrame.phash),
            col(MediaFrame.pdq),
            col(MediaFrame.pdq_quality),
        ).where(col(MediaFrame.media_id).in_(select(col(Media.id)).where(where)))
        return cast("Select[*tuple[Any, ...]]", statement.where(where).union_all(frames))

    def identity(self, session: Session, row_id: int) -> tuple[Any, ...] | None:
        statement = select(col(Media.sha256)).where(col(Media.id) == row_id)
        found = session.connection().execute(statement).first()
        return None if found is None else tuple(found)

    def copies(self, settled: int) -> list[tuple[HashType, str, tuple[object, ...]]]:
        return [
            (
                HashType.phash,
                "COPY (SELECT id::bigint, phash::text FROM media"
                " WHERE id <= %s AND octet_length(phash) = 16) TO STDOUT (FORMAT BINARY)",
                (settled,),
            ),
            (
                HashType.pdq,
                "COPY (SELECT id::bigint, pdq::text FROM media WHERE id <= %s"
                " AND octet_length(pdq) = 64 AND coalesce(pdq_quality, 0) >= %s)"
                " TO STDOUT (FORMAT BINARY)",
                (settled, self.owner.pdq_min_quality),
            ),
            (
                HashType.phash,
                "COPY (SELECT media_id::bigint, phash::text FROM media_frame"
                " WHERE media_id <= %s AND octet_length(phash) = 16) TO STDOUT (FORMAT BINARY)",
                (settled,),
            ),
            (
                HashType.pdq,
                "COPY (SELECT media_id::bigint, pdq::text FROM media_frame WHERE media_id <= %s"
                " AND octet_length(pdq) = 64 AND pdq_quality >= %s) TO STDOUT (FORMAT BINARY)",
                (settled, self.owner.pdq_min_quality),
            ),
        ]

    def add(self, rows: Sequence[Any]) -> None:
        minimum = self.owner.pdq_min_quality
        self._add(HashType.phash, ((r[0], r[1]) for r in rows if r[1] is not None))
        self._add(
            HashType.pdq,
            ((r[0], r[2]) for r in rows if r[2] is not None and (r[3] or 0) >= minimum),
        )


class _KnownTable(_Table):
    name = "known_entry"
    kind = _KNOWN

    @property
    def id(self) -> Any:
        return col(KnownEntry.id)

    def top(self, session: Session) -> int:
        connection = session.connection()
        if connection.dialect.name != "postgresql":
            return super().top(session)
        # The partitions index ids by block range, which cannot give max(id) without a
        # scan; the sequence's last value bounds every id handed out.
        return int(
            connection.exec_driver_sql(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM known_entry_id_seq"
            ).scalar_one()
        )

    def rows(
        self, where: ColumnElement[bool], *, settled_only: bool = False
    ) -> Select[*tuple[Any, ...]]:
        statement = select(
            col(KnownEntry.id), col(KnownEntry.phash), col(KnownEntry.pdq), col(KnownEntry.list_id)
        )
        if settled_only:
            statement = statement.where(
                col(KnownEntry.phash).is_not(None) | col(KnownEntry.pdq).is_not(None)
            )
        return statement.where(where)

    def copies(self, settled: int) -> list[tuple[HashType, str, tuple[object, ...]]]:
        query = (
            "COPY (SELECT id::bigint, {0}::text FROM known_entry WHERE id <= %s"
            " AND octet_length({0}) = {1}) TO STDOUT (FORMAT BINARY)"
        )
        return [
            (HashType.phash, query.format("phash", 16), (settled,)),
            (HashType.pdq, query.format("pdq", 64), (settled,)),
        ]

    def add(self, rows: Sequence[Any]) -> None:
        self._add(HashType.phash, ((r[0], r[1]) for r in rows if r[1] is not None))
        self._add(HashType.pdq, ((r[0], r[2]) for r in rows if r[2] is not None))
        self.lists.update(int(r[3]) for r in rows)

    def identity(self, session: Session, row_id: int) -> tuple[Any, ...] | None:
        entry = KnownEntry.__table__  # type: ignore[attr-defined]
        statement = select(entry.c.list_id, *(entry.c[t.value] for t in HashType)).where(
            entry.c.id == row_id
        )
        found = session.connection().execute(statement).first()
        return None if found is None else tuple(found)

    def holes(self, session: Session, settled: int) -> tuple[Ids, int] | None:
        # ``top`` is the sequence's value: an import running now has its ids below it.
        ids = np.concatenate(
            [
                np.zeros(0, dtype=np.int64),
                *_copy_ids(
                    session,
                    "COPY (SELECT id::bigint FROM known_entry WHERE id <= %s)"
                    " TO STDOUT (FORMAT BINARY)",
                    (settled,),
                ),
            ]
        )
        after = _transactions(session)
        return ids, (after[1] if after else 0)


@lru_cache
def get_near_duplicates() -> NearDuplicates:
    """The process's near-duplicate view, configured from the settings."""
    settings = get_settings()
    return NearDuplicates(
        phash_radius=settings.phash_radius,
        pdq_radius=settings.pdq_radius,
        pdq_min_quality=settings.pdq_min_quality,
        refresh_seconds=settings.neardup_refresh_seconds,
        recent_seconds=settings.neardup_catchup_seconds,
        near_limit=settings.near_match_limit,
    )
