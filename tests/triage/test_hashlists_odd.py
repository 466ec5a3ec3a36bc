"""Odd inputs to the hash list importer, on both parsing paths (from a review).

The block path (PostgreSQL: runs of well-formed CSV lines checked a block at a time and
sent to COPY as read) and the line-by-line path (SQLite, and lines that fail the block
check) must agree line for line; bad input must give a clear error or a rejected line
with its number, never a traceback, and never cost a good line. Hash lists hold hashes
only: every value here is random hex.
"""

from __future__ import annotations

import codecs
import io
import json
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session, col

from hotline.errors import HotlineError
from tests.hotline import test_cli_hashes
from tests.hotline.test_cli_hashes import Run, digest
from tests.triage.test_hashlists import expand
from triage import hashlists
from triage.hashlists import (
    KEY_COLUMNS,
    Rejected,
    UnrecognisedFormat,
    detect_format,
    import_list,
)
from triage.models import HashList, KnownEntry

# The hashes command, run as a user runs it (a process of its own).
cli = test_cli_hashes.cli


def md5(n: int) -> str:
    return digest("md5", n)


def both_ways(data: bytes, fmt: hashlists.Format = "csv") -> tuple[list[object], list[object]]:
    """(line-by-line items, block-path items with blocks expanded) of one file."""
    plain: list[object] = list(hashlists.parse(io.BytesIO(data), fmt))
    fast = list(hashlists.parse(io.BytesIO(data), fmt, blocks=True))
    return plain, [e for item in fast for e in expand(item)]


def numbers(items: Sequence[object]) -> list[tuple[int, str]]:
    """(line number, "ok" or the reason) of each item."""
    out: list[tuple[int, str]] = []
    for item in items:
        if isinstance(item, Rejected):
            out.append((item.line_no, item.reason))
        else:
            assert isinstance(item, tuple)
            out.append((int(item[0]), "ok"))
    return out


def categories(session: Session, list_name: str) -> dict[str, str | None]:
    """key -> category of the list's entries."""
    rows = session.execute(
        select(KnownEntry)
        .join(HashList, col(HashList.id) == col(KnownEntry.list_id))
        .where(col(HashList.name) == list_name)
    ).scalars()
    return {next(getattr(e, c) for c in KEY_COLUMNS if getattr(e, c)): e.category for e in rows}


def on_postgres(session: Session) -> bool:
    return session.connection().dialect.name == "postgresql"


# -- what the review found (fixed)


# -- the two paths disagree on line breaks


def test_lone_cr_line_breaks_after_an_lf_header_lose_no_line_on_the_block_path() -> None:
    # The header ends in LF, two rows are separated by a lone CR (a file pasted together
    # from an old Mac export). Line by line both rows are read (the csv module takes a
    # lone CR as a line break, as _count_lines does); the block path cuts at LF only and
    # rejects the pair as one "unreadable line", losing both good hashes on PostgreSQL.
    data = f"md5\n{md5(1)}\r{md5(2)}\n{md5(3)}\n".encode()
    plain, fast = both_ways(data)
    assert numbers(plain) == [(2, "ok"), (3, "ok"), (4, "ok")]
    assert fast == plain


def test_cr_cr_lf_line_breaks_are_numbered_alike_on_both_paths() -> None:
    # "\r\r\n" endings (a CRLF file converted to CRLF a second time). Line by line each
    # is two breaks; the block path counts one: every rejected line number differs.
    data = f"md5\r\r\n{md5(1)}\r\r\nnot-a-hash\r\r\n{md5(2)}\r\r\n".encode()
    plain, fast = both_ways(data)
    assert numbers(fast) == numbers(plain)


# -- lines longer than 1 MiB: the header too


def test_a_header_longer_than_a_mebibyte_is_refused_clearly_on_both_paths() -> None:
    # A wide export (150,000 columns, 1.1 MB of header): no list line is that long, and
    # read in part it would number every later line wrongly.
    columns = ["md5", *(f"c{i}" for i in range(150_000))]
    rows = [",".join([md5(n), *["x"] * 150_000]) for n in range(3)]
    data = ("\n".join([",".join(columns), *rows, "not-a-hash"]) + "\n").encode()
    for blocks in (False, True):
        with pytest.raises(hashlists.UnrecognisedFormat, match="longer than 1 MiB"):
            list(hashlists.parse(io.BytesIO(data), "csv", blocks=blocks))


def test_a_header_cell_over_the_csv_field_limit_is_a_clear_error_on_the_block_path() -> None:
    # Line by line the unreadable header is skipped and the file refused as unrecognised;
    # the block path parses the header with a bare csv.reader and raises _csv.Error,
    # which the command does not catch (a traceback).
    data = ("md5," + "x" * 140_000 + "\n" + md5(1) + ",\n").encode()
    for blocks in (False, True):
        with pytest.raises(HotlineError):
            list(hashlists.parse(io.BytesIO(data), "csv", blocks=blocks))


# -- the first of a repeated entry must win, whichever path each copy took


@pytest.mark.parametrize("existing", [False, True], ids=["new list", "list with entries"])
def test_the_first_copy_of_an_entry_wins_when_only_a_later_one_is_block_clean(
    session: Session, tmp_path: Path, existing: bool
) -> None:
    # Line 2's category has a non-ASCII letter (or its hex is uppercase): it fails the
    # block check and waits in the batch of parsed entries. Line 3, the same MD5, is
    # block-clean and is COPYed at once, before line 2. The fresh partition keeps the
    # lowest id, the staging merge the lowest COPY position: line 3's category wins.
    if existing:
        seed = tmp_path / "seed.csv"
        seed.write_text(f"md5\n{md5(99)}\n")
        import_list(session, seed, list_name="firsts")
    path = tmp_path / "list.csv"
    path.write_text(
        "md5,category\n"
        f"{md5(1)},cat\u00e9gorie A\n"
        f"{md5(1)},later\n"
        f"{md5(2).upper()},first\n"
        f"{md5(2)},later\n",
        encoding="utf-8",
    )
    summary = import_list(session, path, list_name="firsts")
    assert (summary.added, summary.duplicates) == (2, 2)
    found = categories(session, "firsts")
    assert (found[md5(1)], found[md5(2)]) == ("cat\u00e9gorie A", "first")


# -- deeply nested JSON

DEEP = "[" * 100_000


def test_a_deeply_nested_first_line_does_not_crash_format_detection() -> None:
    # json.loads raises RecursionError (not a ValueError) on deep nesting.
    head = ('{"a": ' + DEEP + "\n" + json.dumps({"md5": md5(1)}) + "\n").encode()
    assert detect_format(head) == "jsonl"


def test_a_deeply_nested_json_line_is_rejected_and_the_others_kept() -> None:
    data = "\n".join(
        [json.dumps({"md5": md5(1)}), '{"md5": ' + DEEP, json.dumps({"md5": md5(2)})]
    ).encode()
    items = list(hashlists.parse(io.BytesIO(data), "jsonl"))
    assert [n for n, _ in numbers(items)] == [1, 2, 3]
    assert isinstance(items[1], Rejected)


def test_a_deeply_nested_vics_document_is_refused_clearly() -> None:
    data = ('{"odata.metadata": "x", "value": [{"MD5": "' + md5(1) + '", "x": ' + DEEP).encode()
    with pytest.raises(UnrecognisedFormat):
        list(hashlists.parse(io.BytesIO(data), "vics"))


def test_the_command_reports_a_deeply_nested_json_line_without_a_traceback(
    cli: Run, tmp_path: Path
) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps({"md5": md5(1)}) + "\n" + '{"md5": ' + DEEP + "\n")
    done = cli("import", str(path), "--list", "deep")
    assert "Traceback" not in done.stderr, done.stderr[-400:]
    assert done.returncode == 0
    assert "rejected line 2" in done.stdout


# -- a file that grows while it is read


def test_a_file_that_grows_during_the_import_fails_with_a_clear_error(
    session: Session, tmp_path: Path
) -> None:
    # The id block is sized from the file's line breaks before reading; lines appended
    # meanwhile run the private sequence past its MAXVALUE. That fails the import (by
    # design), but as a psycopg error the command does not catch: a traceback.
    if not on_postgres(session):
        pytest.skip("the id block is PostgreSQL's")
    path = tmp_path / "growing.csv"
    path.write_text("md5\n" + "".join(f"{md5(n)}\n" for n in range(3)))

    def grow(stage: str) -> None:
        if stage == "reading":
            with path.open("a") as out:
                out.writelines(f"{md5(n)}\n" for n in range(3, 100))

    with path.open("rb") as stream, pytest.raises((HotlineError, OSError)):
        import_list(session, stream, list_name="growing", on_stage=grow)


# -- memory: one very long line


@pytest.mark.parametrize(
    ("fmt", "blocks"), [("csv", False), ("csv", True), ("jsonl", False)], ids=str
)
def test_one_very_long_line_does_not_take_memory_in_proportion(
    fmt: hashlists.Format, blocks: bool
) -> None:
    # Streaming is meant to hold one block or batch; a line is read whole, though (the
    # csv module and json.loads get all of it): 48 MB of one line peaks at 2-3 times that.
    # A 2 GB line would need 4-6 GB.
    size = 48 << 20
    if fmt == "csv":
        data = b"md5,category\n" + b"x" * size + b"\n" + md5(1).encode() + b",\n"
    else:
        data = b'{"md5": "' + b"a" * size + b'"}\n' + json.dumps({"md5": md5(1)}).encode()
    tracemalloc.start()
    try:
        items = list(hashlists.parse(io.BytesIO(data), fmt, blocks=blocks))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len([e for item in items for e in expand(item)]) == 2
    assert peak < 40 << 20, f"peak {peak >> 20} MB for a {size >> 20} MB line"


# -- nits


def test_an_unterminated_quote_on_the_last_line_is_rejected_as_it_is_elsewhere() -> None:
    # In the middle of a file this line is "unterminated quote"; as the last line (no
    # line after it to swallow) the csv module closes the field at EOF and it is kept.
    middle = f'md5,category\n{md5(1)},"open\n{md5(2)},x\n'.encode()
    last = f'md5,category\n{md5(2)},x\n{md5(1)},"open'.encode()
    assert numbers(both_ways(middle)[0])[0] == (2, "unterminated quote")
    for items in both_ways(last):
        assert numbers(items) == [(2, "ok"), (3, "unterminated quote")]


def test_a_header_naming_a_hash_type_twice_is_refused() -> None:
    # "md5" and "MD5" name one column type: which of the two would count is a guess (a
    # malformed value in the other would slip in with its line, a good one be dropped).
    data = f"md5,MD5\n{md5(1)},not-a-hash\n".encode()
    for blocks in (False, True):
        with pytest.raises(hashlists.UnrecognisedFormat, match="md5 more than once"):
            list(hashlists.parse(io.BytesIO(data), "csv", blocks=blocks))


# -- what held


ODD_FILES: dict[str, tuple[bytes, list[tuple[int, str]]]] = {
    "utf-8 BOM, blank lines before the header": (
        codecs.BOM_UTF8 + f"\n\n\nmd5,category\n{md5(1)},1\n".encode(),
        [(5, "ok")],
    ),
    "BOM alone on the first line": (
        codecs.BOM_UTF8 + f"\nmd5\n{md5(1)}\nzz\n".encode(),
        [(3, "ok"), (4, "md5: not 32 hex digits")],
    ),
    "uppercase, padded and 0x hex": (
        f"md5\n{md5(1).upper()}\n  {md5(2)}  \n0x{md5(3)}\n{md5(4)[:-1]}\n".encode(),
        [(2, "ok"), (3, "ok"), (4, "md5: not 32 hex digits"), (5, "md5: not 32 hex digits")],
    ),
    "blank and whitespace-only lines, no final break": (
        f"sha1,md5\n\n   \n\t\n{digest('sha1', 1)},{md5(1)}\n,\n,{md5(2)}".encode(),
        [(5, "ok"), (6, "no hash value"), (7, "ok")],
    ),
    "NUL bytes": (
        f"md5,category\n{md5(1)}\x00,1\n{md5(2)},a\x00b\n{md5(3)},1\n".encode(),
        [(2, "md5: not 32 hex digits"), (3, "category contains control characters"), (4, "ok")],
    ),
    "invalid UTF-8 in a hash": (
        b"md5,category\n" + md5(1)[:-1].encode() + b"\xff,1\n" + md5(2).encode() + b",1\n",
        [(2, "md5: not 32 hex digits"), (3, "ok")],
    ),
    "a header repeated mid-file": (
        f"md5,category\n{md5(1)},1\nmd5,category\n{md5(2)},2\n".encode(),
        [(2, "ok"), (3, "md5: not 32 hex digits"), (4, "ok")],
    ),
    "columns in an unusual order": (
        f"category,pdq,sha1\n1,{digest('sha256', 1)},{digest('sha1', 1)}\n,,{digest('sha1', 2)}\n"
        f"x,{digest('sha256', 3)},\n".encode(),
        [(2, "ok"), (3, "ok"), (4, "ok")],
    ),
    "a CR inside a quoted field, a quote mid-field": (
        f'md5,category\n{md5(1)},"a\rb"\n{md5(2)},a"b\n{md5(3)[:8]}"{md5(3)[8:]},1\n'.encode(),
        [(2, "ok"), (4, "ok"), (5, "md5: not 32 hex digits")],
    ),
    "categories with commas, semicolons, quotes, unicode": (
        f'md5,category\n{md5(1)},"a, b"\n{md5(2)},a;b\n{md5(3)},"say ""x"""\n'
        f"{md5(4)},\u00e9\u4e2d\n{md5(5)},{'c' * 65}\n".encode(),
        [(2, "ok"), (3, "ok"), (4, "ok"), (5, "ok"), (6, "category longer than 64 characters")],
    ),
    "more fields than the header": (
        f"md5,category\n{md5(1)},1,extra\n{md5(2)}\n".encode(),
        [(2, "3 fields, the header has 2"), (3, "ok")],
    ),
    "a CRLF header, some lines ending in LF only": (
        f"md5,category\r\n{md5(1)},1\n{md5(2)},2\r\nzz,1\n{md5(3)},3\r\n".encode(),
        [(2, "ok"), (3, "ok"), (4, "md5: not 32 hex digits"), (5, "ok")],
    ),
    "CRLF throughout": (
        f"md5,category\r\n{md5(1)},1\r\nzz,1\r\n\r\n{md5(2)},2\r\n".encode(),
        [(2, "ok"), (3, "md5: not 32 hex digits"), (5, "ok")],
    ),
}


@pytest.mark.parametrize("name", sorted(ODD_FILES))
def test_odd_csv_files_read_alike_on_both_paths(name: str) -> None:
    data, expected = ODD_FILES[name]
    plain, fast = both_ways(data)
    assert numbers(plain) == expected
    assert fast == plain


def test_icse_rows_shorter_and_longer_than_the_header_on_both_paths() -> None:
    data = (
        "MD5;SHA1;Category\n"
        f"{md5(1).upper()};{digest('sha1', 1).upper()};Category 1\n"
        f"{md5(2)}\n"
        f"{md5(3)};;;\n"
        f"{md5(4)};{digest('sha1', 4)};a,b\n"
    ).encode()
    plain, fast = both_ways(data, "icse")
    assert numbers(plain) == [(2, "ok"), (3, "ok"), (4, "4 fields, the header has 3"), (5, "ok")]
    assert fast == plain
    assert plain[3] == (5, (None, digest("sha1", 4), md5(4), None, None, None), "a,b")


@pytest.mark.parametrize(
    "lead", [0, 1, 63], ids=["exactly", "one byte over", "all but its break over"]
)
def test_lines_at_the_real_block_boundary(lead: int) -> None:
    # 64-byte lines fill a 4 MiB block exactly; the first line ``lead`` bytes shorter
    # moves the boundary ``lead`` bytes into the line after the block's last line.
    cat = "c" * 30
    lines = [f"{md5(n)},{cat}" for n in range(hashlists.BLOCK_SIZE // 64 + 2)]
    lines[0] = lines[0][: len(lines[0]) - lead] if lead else lines[0]
    lines[65_535] = f"{md5(65_535)[:-1]}Z,{cat}"  # the block's last line, a bad one
    data = ("md5,category\n" + "\n".join(lines) + "\n").encode()
    plain, fast = both_ways(data)
    assert fast == plain
    assert [r for r in plain if isinstance(r, Rejected)] == [
        Rejected(65_537, "md5: not 32 hex digits")
    ]


def test_json_lines_with_odd_values() -> None:
    lines = [
        json.dumps({"md5": int("1" * 32)}),
        json.dumps({"md5": md5(2), "category": {"nested": 1}}),
        json.dumps({"md5": md5(3).upper(), "category": 7}),
        "",
        "   ",
        json.dumps([md5(5)]),
        json.dumps({"MD5": "bad", "md5": md5(6)}),  # duplicate keys: the last one counts
        json.dumps({"hash_type": "SHA-1", "value": digest("sha1", 7)}),
        json.dumps({"type": "crc32", "value": "abcd"}),
        '{"md5": "' + md5(9) + '", "category": 1e999}',
        "{not json",
    ]
    data = "\r\n".join(lines).encode()
    items = list(hashlists.parse(io.BytesIO(data), "jsonl"))
    assert numbers(items) == [
        (1, "md5: not a string"),
        (2, "category is not a string or number"),
        (3, "ok"),
        (6, "not a JSON object"),
        (7, "ok"),
        (8, "ok"),
        (9, "unknown hash type 'crc32'"),
        (10, "ok"),
        (11, "not valid JSON"),
    ]
    assert items[2] == (3, (None, None, md5(3), None, None, None), "7")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([{"CaseID": 1}], [(1, "no hash value")]),
        ([{"CaseID": 1, "Media": None}], [(1, "no hash value")]),
        ([{"CaseID": 1, "Media": "x"}], [(1, "no hash value")]),
        ([{"CaseID": 1, "Media": []}, {"MD5": md5(1)}], [(1, "ok")]),
        (
            [{"Media": [1, {"MD5": md5(2)}]}, "x"],
            [
                (1, "media item is not a JSON object"),
                (2, "ok"),
                (3, "media item is not a JSON object"),
            ],
        ),
    ],
)
def test_vics_cases_with_odd_media(value: list[object], expected: list[tuple[int, str]]) -> None:
    data = json.dumps({"odata.metadata": "x", "value": value}).encode()
    assert detect_format(data) == "vics"
    assert numbers(list(hashlists.parse(io.BytesIO(data), "vics"))) == expected


@pytest.mark.parametrize("value", [None, {}, "x", 1])
def test_a_vics_document_without_a_value_array_is_refused(value: object) -> None:
    data = json.dumps({"odata.metadata": "x", "value": value}).encode()
    with pytest.raises(UnrecognisedFormat):
        list(hashlists.parse(io.BytesIO(data), "vics"))


def test_huge_photodna_values_cost_their_line_only() -> None:
    data = (
        "MD5;PhotoDNA\n"
        f"{md5(1)};{'A' * 1024}\n"
        f"{md5(2)};{'A' * 1025}\n"
        f"{md5(3)};{'A' * 200_000}\n"
        f"{md5(4)};{'1,' * 300}1\n"
    ).encode()
    plain, fast = both_ways(data, "icse")
    assert fast == plain
    assert numbers(plain) == [
        (2, "ok"),
        (3, "photodna: not 1 to 1024 printable ASCII characters"),
        (4, "unreadable line: field larger than field limit (131072)"),
        (5, "ok"),
    ]


@pytest.mark.parametrize(
    "data", [b"", b"\n\r\n  \t\n", codecs.BOM_UTF8, "\ufeff".encode("utf-16")], ids=repr
)
def test_empty_files_are_refused_as_such(data: bytes) -> None:
    with pytest.raises(UnrecognisedFormat):
        detect_format(data)


def test_utf16_big_endian_with_a_bom(session: Session, tmp_path: Path) -> None:
    path = tmp_path / "be.csv"
    path.write_bytes(f"md5,category\r\n{md5(1)},\u00e9\r\nzz,1\r\n".encode("utf-16"))
    summary = import_list(session, path, list_name="be")
    assert (summary.added, summary.rejected) == (1, [(3, "md5: not 32 hex digits")])
    assert categories(session, "be") == {md5(1): "\u00e9"}


def test_a_directory_is_an_os_error(session: Session, tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        import_list(session, tmp_path, list_name="dir")


def test_odd_categories_are_stored_as_read_and_the_first_copy_wins(
    session: Session, tmp_path: Path
) -> None:
    # Through whichever writer the backend has (on PostgreSQL: blocks and COPY text).
    cats = ["a, b", "a;b", 'say "x"', "back\\slash", "\\N", "\u00e9\u4e2d", "NULL", "a\tb"]
    lines = [f'{md5(n)},"{c.replace(chr(34), chr(34) * 2)}"' for n, c in enumerate(cats)]
    lines += [f"{md5(n)},plain" for n in range(len(cats), 2_000)]
    lines += [f"{md5(5)},repeat", f"{md5(1500)},repeat"]
    path = tmp_path / "cats.csv"
    path.write_text("md5,category\n" + "\n".join(lines) + "\n", encoding="utf-8")
    summary = import_list(session, path, list_name="cats")
    assert (summary.added, summary.duplicates, summary.rejected_count) == (2_000, 2, 0)
    found = categories(session, "cats")
    assert [found[md5(n)] for n in range(len(cats))] == [*cats[:-1], "a b"]
    assert found[md5(1500)] == "plain"
