"""Known hash lists: format detection, parsing, import, duplicates, the own list, removal.

List files are generated here (hash lists are not content); each test runs in a rolled-back
transaction on the test database (SQLite or PostgreSQL).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import hashlib
import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from triage import hashlists
from triage.hashlists import (
    KEY_COLUMNS,
    ImportSummary,
    InvalidListName,
    OwnListReadOnly,
    UnknownList,
    UnrecognisedFormat,
    detect_format,
    import_list,
    is_matchable,
    list_info,
    list_lists,
    remove_list,
    set_enabled,
)
from triage.models import HashList, HashType, KnownEntry
from triage.neardup import informative_phashes


def digest(kind: str, n: int) -> str:
    return hashlib.new(kind, f"synthetic-{n}".encode()).hexdigest()


def pdq(n: int) -> str:
    return hashlib.sha256(f"pdq-{n}".encode()).hexdigest()


def phash(n: int) -> str:
    """A random pHash that could be a picture's (one random code in 40,000 looks like a
    flat picture's, which nothing matches: ``informative_phash``)."""
    salt = ""
    while True:
        value = hashlib.md5(f"phash-{n}{salt}".encode()).hexdigest()[:16]  # noqa: S324
        if informative_phashes(value):
            return value
        salt += "+"


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def entries(session: Session, list_name: str) -> list[KnownEntry]:
    return list(
        session.execute(
            select(KnownEntry)
            .join(HashList, col(HashList.id) == col(KnownEntry.list_id))
            .where(col(HashList.name) == list_name)
            .order_by(col(KnownEntry.id))
        ).scalars()
    )


def stored(session: Session, list_name: str) -> dict[tuple[str, str], str | None]:
    """Every hash of the list's entries, with its entry's category."""
    return {
        (t, getattr(entry, t)): entry.category
        for entry in entries(session, list_name)
        for t in KEY_COLUMNS
        if getattr(entry, t) is not None
    }


def seen_media(session: Session, count: int, now: dt.datetime) -> None:
    """Media items 0..count-1 seen here: ``digest(kind, n)`` hashes and ``phash(n)``."""
    from triage.models import Media, MediaKind

    session.execute(
        insert(Media),
        [
            {
                "sha256": digest("sha256", n),
                "sha1": digest("sha1", n),
                "md5": digest("md5", n),
                "phash": phash(n),
                "mime": "image/jpeg",
                "kind": MediaKind.image,
                "size": 1000,
                "first_seen_at": now,
            }
            for n in range(count)
        ],
    )


@pytest.fixture
def own_list(session: Session) -> HashList:
    """The own list made by migration 0002 (made again if a committing test truncated it)."""
    found = session.execute(select(HashList).where(col(HashList.own))).scalars().first()
    if found is None:
        found = hashlists.create_list(
            session, "hotline", description="Media confirmed here.", own=True
        )
    return found


# --- detection ----------------------------------------------------------------------------

VICS_MEDIA = [
    {"MediaID": 1, "Category": 1, "MD5": digest("md5", 1), "SHA1": digest("sha1", 1)},
    {"MediaID": 2, "Category": "2", "MD5": digest("md5", 2).upper()},
]
VICS = {
    "odata.metadata": "http://github.com/ICMEC/ProjectVic/DataModels/1.3.xml/$metadata#Cases",
    "value": [{"CaseID": 1, "Media": VICS_MEDIA}],
}


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"sha256,category\n" + digest("sha256", 1).encode() + b",1\n", "csv"),
        (b"MD5\n" + digest("md5", 1).encode() + b"\n", "csv"),
        (b'"SHA-1","Category"\n', "csv"),
        (codecs.BOM_UTF8 + b"md5,sha1\n", "csv"),
        ("phash,pdq\n".encode("utf-16"), "csv"),
        (b"\n\nmd5,sha1\n", "csv"),
        (b"MD5;SHA1;PhotoDNA;Category;Baseline\n", "icse"),
        (b"md5;sha1\n", "icse"),
        (b'{"md5": "' + digest("md5", 1).encode() + b'", "category": 1}\n{"md5": ', "jsonl"),
        (b'{"hash_type": "sha256", "value": "ab"}\n', "jsonl"),
        (b"not json\n" + b'{"md5": "x"}\n', None),
        (json.dumps(VICS).encode(), "vics"),
        (json.dumps(VICS, indent=2).encode(), "vics"),
        (json.dumps(VICS).encode()[:300], "vics"),  # a long one-line document, cut
        (b"", None),
        (b"   \n\n", None),
        (b"hello world\n", None),
        (b"name,size\nx,1\n", None),
        (b"[1, 2, 3]", None),
        (b'{"some": "thing"', None),
    ],
)
def test_detect_format_reads_the_content(head: bytes, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(UnrecognisedFormat):
            detect_format(head)
    else:
        assert detect_format(head) == expected


def test_the_format_is_told_from_content_not_the_file_name(
    session: Session, tmp_path: Path
) -> None:
    path = write(tmp_path, "list.json", f"md5\n{digest('md5', 1)}\n")
    assert import_list(session, path, list_name="misnamed").format == "csv"


# --- CSV ----------------------------------------------------------------------------------


def test_csv_rows_with_several_hashes_share_the_category(session: Session, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "list.csv",
        "SHA256,sha1,MD5,pdq,phash,category,source\n"
        f"{digest('sha256', 1).upper()},{digest('sha1', 1)},{digest('md5', 1)},,,A1,x\n"
        f" {digest('sha256', 2)} ,,,{pdq(2)},{phash(2)},B2,y\n"
        f",,{digest('md5', 3)},,,,\n",
    )
    summary = import_list(session, path, list_name="national", description="National list")
    assert summary == ImportSummary(
        list_name="national", format="csv", added=3, duplicates=0, total_lines=3
    )
    assert stored(session, "national") == {
        ("sha256", digest("sha256", 1)): "A1",
        ("sha1", digest("sha1", 1)): "A1",
        ("md5", digest("md5", 1)): "A1",
        ("sha256", digest("sha256", 2)): "B2",
        ("pdq", pdq(2)): "B2",
        ("phash", phash(2)): "B2",
        ("md5", digest("md5", 3)): None,
    }
    info = list_info(session, "national")
    assert info.description == "National list"
    assert info.counts == {"md5": 2, "pdq": 1, "phash": 1, "sha1": 1, "sha256": 2}
    assert info.entries == 3
    # One entry per line, holding all the line's hashes.
    assert {(e.sha256, e.md5, e.category) for e in entries(session, "national")} == {
        (digest("sha256", 1), digest("md5", 1), "A1"),
        (digest("sha256", 2), None, "B2"),
        (None, digest("md5", 3), None),
    }


def test_bad_lines_are_reported_by_number_and_good_ones_kept(
    session: Session, tmp_path: Path
) -> None:
    lines = [
        "sha256,md5,category",  # 1
        f"{digest('sha256', 1)},,1",  # 2 good
        f"{digest('sha256', 2)[:-1]},,1",  # 3 sha256 too short
        "",  # 4 blank: skipped, not rejected
        f",{digest('md5', 4)},2",  # 5 good
        f",{digest('md5', 5)[:-1]}g,2",  # 6 not hex
        ",,3",  # 7 no hash at all
        f'{digest("sha256", 8)},,"multi',  # 8 good, quoted category over two lines
        'line"',  # 9
        f"{digest('sha256', 10)},{digest('md5', 10)},4,extra",  # 10 too many fields
        f"{digest('sha256', 11)},,{'c' * 65}",  # 11 category too long
        f"{digest('sha256', 12)},{digest('md5', 12)[:5]},5",  # 12 one bad cell: whole line
        f"{digest('sha256', 13)}",  # 13 good, trailing cells missing
    ]
    path = write(tmp_path, "list.csv", "\n".join(lines) + "\n")
    summary = import_list(session, path, list_name="mixed")
    assert summary.rejected == [
        (3, "sha256: not 64 hex digits"),
        (6, "md5: not 32 hex digits"),
        (7, "no hash value"),
        (10, "4 fields, the header has 3"),
        (11, "category longer than 64 characters"),
        (12, "md5: not 32 hex digits"),
    ]
    assert summary.rejected_count == 6
    assert summary.total_lines == 10
    assert (summary.added, summary.duplicates) == (4, 0)
    assert stored(session, "mixed") == {
        ("sha256", digest("sha256", 1)): "1",
        ("md5", digest("md5", 4)): "2",
        ("sha256", digest("sha256", 8)): "multi line",
        ("sha256", digest("sha256", 13)): None,
    }


@pytest.mark.parametrize("after", [1, 2, 40])
def test_an_unclosed_quote_costs_its_own_line_only(
    session: Session, tmp_path: Path, after: int
) -> None:
    # A quote opened and never closed used to take the following lines into one field,
    # silently, until the csv module's field limit: thousands of hashes never counted.
    good = [f"{digest('md5', n)},x" for n in range(after)]
    lines = ["md5,category", f"{digest('md5', 100)},ok", f'{digest("md5", 101)},"open', *good]
    path = write(tmp_path, "list.csv", "\n".join(lines) + "\n")
    summary = import_list(session, path, list_name="stray")
    assert summary.rejected == [(3, "unterminated quote")]
    assert summary.total_lines == 2 + after
    assert summary.added == 1 + after
    assert ("md5", digest("md5", after - 1)) in stored(session, "stray")


def test_duplicates_within_the_file_and_across_imports(session: Session, tmp_path: Path) -> None:
    first = write(
        tmp_path,
        "first.csv",
        "md5,sha1,category\n"
        f"{digest('md5', 1)},,first\n"
        f"{digest('md5', 1).upper()},,second\n"  # the same entry again: the first wins
        f"{digest('md5', 2)},,x\n"
        f"{digest('md5', 2)},{digest('sha1', 2)},y\n"  # a SHA-1 too: another key
        f"{digest('md5', 4)},{digest('sha1', 4)},z\n"
        f"{digest('md5', 5)},{digest('sha1', 4)},z\n",  # keyed by the SHA-1: a repeat
    )
    summary = import_list(session, first, list_name="dups")
    assert (summary.added, summary.duplicates, summary.entries) == (4, 2, 6)
    assert stored(session, "dups")[("md5", digest("md5", 1))] == "first"
    assert ("md5", digest("md5", 5)) not in stored(session, "dups")

    second = write(
        tmp_path,
        "second.csv",
        f"md5,category\n{digest('md5', 2)},y\n{digest('md5', 3)},z\n{digest('md5', 3)},z\n",
    )
    summary = import_list(session, second, list_name="dups")
    assert (summary.added, summary.duplicates) == (1, 2)
    kept = [e for e in entries(session, "dups") if e.md5 == digest("md5", 2) and not e.sha1]
    assert [e.category for e in kept] == ["x"]  # kept as it was

    # The same value in another list is not a duplicate.
    assert import_list(session, second, list_name="other").added == 2
    assert list_info(session, "dups").entries == 5


def test_unusual_text_survives_on_every_backend(session: Session, tmp_path: Path) -> None:
    category = "tab\there  back\\slash \u00e9"
    path = tmp_path / "list.csv"
    path.write_bytes(
        codecs.BOM_UTF8 + f'md5,category\r\n{digest("md5", 1)},"{category}"\r\n'.encode()
    )
    summary = import_list(session, path, list_name="text")
    assert summary.added == 1
    assert stored(session, "text") == {("md5", digest("md5", 1)): "tab here back\\slash \u00e9"}


def test_utf16_and_a_control_character_category(session: Session, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "list.csv",
        f"sha1,category\n{digest('sha1', 1)},ok\n{digest('sha1', 2)},bad\x00nul\n",
        encoding="utf-16",
    )
    summary = import_list(session, path, list_name="utf16")
    assert summary.added == 1
    assert summary.rejected == [(3, "category contains control characters")]


def test_a_file_of_nothing_but_a_header_imports_nothing(session: Session, tmp_path: Path) -> None:
    summary = import_list(session, write(tmp_path, "h.csv", "md5\n"), list_name="empty")
    assert (summary.added, summary.total_lines, summary.rejected_count) == (0, 0, 0)
    assert list_info(session, "empty").entries == 0


def test_the_rejected_list_is_capped_but_counted(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashlists, "REJECTED_KEPT", 5)
    body = "".join(f"nothex{i}\n" for i in range(50))
    path = write(tmp_path, "bad.csv", f"md5\n{digest('md5', 1)}\n{body}")
    summary = import_list(session, path, list_name="capped", batch_size=7)
    assert summary.rejected_count == 50
    assert [line for line, _ in summary.rejected] == [3, 4, 5, 6, 7]
    assert summary.added == 1


def test_batches_and_progress(session: Session, tmp_path: Path) -> None:
    body = "".join(f"{digest('sha256', i)},{i % 7}\n" for i in range(2_500))
    path = write(tmp_path, "big.csv", "sha256,category\n" + body)
    size = path.stat().st_size
    progress: list[tuple[int, int]] = []
    stages: list[str] = []
    summary = import_list(
        session,
        path,
        list_name="batched",
        batch_size=100,
        on_progress=lambda done, total: progress.append((done, total)),
        on_stage=stages.append,
    )
    assert summary.added == 2_500
    assert stages == ["reading", "merging"]
    assert progress[-1] == (size, size)
    assert all(total == size for _, total in progress)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)


def test_a_stream_is_read_as_well_as_a_path(session: Session) -> None:
    stream = io.BytesIO(f"md5\n{digest('md5', 1)}\n".encode())
    summary = import_list(session, stream, list_name="stdin")
    assert summary.added == 1


# --- ICSE ---------------------------------------------------------------------------------


def test_icse_export_with_photodna_and_baseline(session: Session, tmp_path: Path) -> None:
    photodna = "AbC+/" * 30 + "=="  # base64-like, case kept
    lines = [
        "MD5;SHA1;PhotoDNA;Category;Baseline;Comment",
        f"{digest('md5', 1).upper()};{digest('sha1', 1)};{photodna};Category 1;Yes;x",
        f"{digest('md5', 2)};;;Category 2;0;y",
        f";;{'0' * 288};;true;",  # PhotoDNA only: kept, never matched
        f"{digest('md5', 4)};{digest('sha1', 4)};{'x' * 1025};;;",  # PhotoDNA too long
        "ICSE-ID-5;;;;;",
    ]
    path = write(tmp_path, "icse.csv", "\r\n".join(lines) + "\r\n")
    summary = import_list(session, path, list_name="icse")
    assert summary.format == "icse"
    assert summary.rejected == [
        (5, "photodna: not 1 to 1024 printable ASCII characters"),
        (6, "md5: not 32 hex digits"),
    ]
    assert stored(session, "icse") == {
        ("md5", digest("md5", 1)): "baseline",
        ("sha1", digest("sha1", 1)): "baseline",
        ("photodna", photodna): "baseline",
        ("md5", digest("md5", 2)): "Category 2",
        ("photodna", "0" * 288): "baseline",
    }
    assert not is_matchable(HashType.photodna)
    assert {t for t in HashType if is_matchable(t)} == set(HashType) - {HashType.photodna}


def test_photodna_as_comma_separated_decimals_is_kept_with_its_line(
    session: Session, tmp_path: Path
) -> None:
    # 144 bytes written as decimals: 575 characters at most, 718 with a space after
    # each comma. Such lines were refused whole (a cap of 512), their MD5 and SHA-1 lost.
    tight = ",".join(["255"] * 144)
    spaced = ", ".join(str(n) for n in range(100, 244))
    lines = [
        "MD5;SHA1;PhotoDNA;Category;Baseline",
        f"{digest('md5', 1)};{digest('sha1', 1)};{tight};Category 1;0",
        f"{digest('md5', 2)};{digest('sha1', 2)};{spaced};Category 1;0",
    ]
    path = write(tmp_path, "icse.csv", "\r\n".join(lines) + "\r\n")
    summary = import_list(session, path, list_name="icse")
    assert (len(tight), len(spaced)) == (575, 718)
    assert summary.rejected == []
    found = stored(session, "icse")
    assert found[("photodna", tight)] == found[("photodna", spaced)] == "Category 1"
    assert ("md5", digest("md5", 2)) in found


# --- JSON lines ---------------------------------------------------------------------------


def test_jsonl_in_both_shapes(session: Session, tmp_path: Path) -> None:
    lines = [
        json.dumps({"md5": digest("md5", 1), "SHA1": digest("sha1", 1), "category": 1}),  # 1
        json.dumps({"hash_type": "sha256", "value": digest("sha256", 2), "category": "A"}),  # 2
        "",  # 3 blank
        "{not json",  # 4
        json.dumps([digest("md5", 5)]),  # 5
        json.dumps({"type": "crc32", "hash": "abcd"}),  # 6
        json.dumps({"md5": 5}),  # 7
        json.dumps({"type": "PDQ", "hash": pdq(8)}),  # 8
        json.dumps({"md5": digest("md5", 9), "category": {"nested": 1}}),  # 9
        json.dumps({"note": "no hash"}),  # 10
    ]
    path = write(tmp_path, "list.jsonl", "\n".join(lines) + "\n")
    summary = import_list(session, path, list_name="jsonl")
    assert summary.format == "jsonl"
    assert summary.rejected == [
        (4, "not valid JSON"),
        (5, "not a JSON object"),
        (6, "unknown hash type 'crc32'"),
        (7, "md5: not a string"),
        (9, "category is not a string or number"),
        (10, "no hash value"),
    ]
    assert summary.total_lines == 9
    assert stored(session, "jsonl") == {
        ("md5", digest("md5", 1)): "1",
        ("sha1", digest("sha1", 1)): "1",
        ("sha256", digest("sha256", 2)): "A",
        ("pdq", pdq(8)): None,
    }


# --- VICS ---------------------------------------------------------------------------------


def test_vics_cases_and_their_media_are_imported_and_numbered(
    session: Session, tmp_path: Path
) -> None:
    document = {
        "odata.metadata": "http://github.com/ICMEC/ProjectVic/DataModels/1.3.xml/$metadata#Cases",
        "value": [
            {"CaseID": 1, "Media": VICS_MEDIA},
            {"CaseID": 2, "Media": []},
            {
                "CaseID": 4,
                "Media": [
                    {"MediaID": 3, "Category": 0, "SHA256": digest("sha256", 3)},
                    {"MediaID": 4, "Category": 1, "MD5": "not-a-hash"},
                    "junk",
                    {  # media item 1 again
                        "MediaID": 6,
                        "Category": 3,
                        "MD5": digest("md5", 1),
                        "SHA1": digest("sha1", 1),
                    },
                ],
            },
        ],
    }
    path = write(tmp_path, "vics.json", json.dumps(document, indent=1))
    summary = import_list(session, path, list_name="projectvic")
    assert summary.format == "vics"
    assert summary.total_lines == 6
    assert summary.rejected == [
        (4, "md5: not 32 hex digits"),
        (5, "media item is not a JSON object"),
    ]
    assert (summary.added, summary.duplicates) == (3, 1)
    assert stored(session, "projectvic") == {
        ("md5", digest("md5", 1)): "1",
        ("sha1", digest("sha1", 1)): "1",
        ("md5", digest("md5", 2)): "2",
        ("sha256", digest("sha256", 3)): "0",
    }


def test_vics_2_media_document(session: Session, tmp_path: Path) -> None:
    document = {
        "@odata.context": "http://github.com/VICSDATAMODEL/ProjectVic/DataModels/2.0.xml"
        "/Default/$metadata#Media",
        "value": [
            {
                "MediaID": 1,
                "Category": 0,
                "MD5": digest("md5", 1).upper(),
                "SHA1": digest("sha1", 1).upper(),
                "MediaSize": 2835,
                "DateUpdated": "2023-06-07T02:31:49.8300Z",
                "IsPrecategorized": "false",
            },
            {"MediaID": 2, "Category": 2, "MediaSize": 1},
        ],
    }
    path = write(tmp_path, "vics.json", json.dumps(document))  # one line
    summary = import_list(session, path, list_name="vics2")
    assert summary.format == "vics"
    assert summary.rejected == [(2, "no hash value")]
    assert stored(session, "vics2") == {
        ("md5", digest("md5", 1)): "0",
        ("sha1", digest("sha1", 1)): "0",
    }


def test_a_broken_vics_document_is_refused_whole(session: Session, tmp_path: Path) -> None:
    path = write(tmp_path, "vics.json", json.dumps(VICS)[:-10])
    with pytest.raises(UnrecognisedFormat, match="not valid JSON"):
        import_list(session, path, list_name="broken")
    session.rollback()


def test_an_unrecognised_file_creates_no_list(session: Session, tmp_path: Path) -> None:
    with pytest.raises(UnrecognisedFormat):
        import_list(session, write(tmp_path, "x.txt", "hello\n"), list_name="nothing")
    with pytest.raises(UnknownList):
        list_info(session, "nothing")


# --- lists --------------------------------------------------------------------------------


def test_the_own_list_cannot_be_imported_into_or_removed(
    session: Session, tmp_path: Path, own_list: HashList
) -> None:
    path = write(tmp_path, "list.csv", f"md5\n{digest('md5', 1)}\n")
    with pytest.raises(OwnListReadOnly) as refused:
        import_list(session, path, list_name=own_list.name)
    assert refused.value.status_code == 409
    assert refused.value.code == "own_list_read_only"
    with pytest.raises(OwnListReadOnly):
        remove_list(session, own_list.name)
    # It can be switched off and on like any list.
    assert not set_enabled(session, own_list.name, False).enabled
    assert set_enabled(session, own_list.name, True).enabled
    assert list_info(session, own_list.name).own


def test_disable_enable_and_remove(session: Session, tmp_path: Path, own_list: HashList) -> None:
    path = write(tmp_path, "list.csv", f"md5,sha1\n{digest('md5', 1)},{digest('sha1', 1)}\n")
    import_list(session, path, list_name="b-list")
    import_list(session, path, list_name="a-list")
    names = [i.name for i in list_lists(session)]
    assert names == sorted(names)
    assert {"a-list", "b-list", own_list.name} <= set(names)

    assert not set_enabled(session, "a-list", False).enabled
    assert not list_info(session, "a-list").enabled
    assert set_enabled(session, "a-list", True).enabled

    a_list = session.execute(select(HashList).where(col(HashList.name) == "a-list")).scalar_one()
    assert remove_list(session, "a-list") == 1
    with pytest.raises(UnknownList) as missing:
        list_info(session, "a-list")
    assert missing.value.status_code == 404
    assert list_info(session, "b-list").entries == 1
    left = session.execute(
        select(func.count()).where(col(KnownEntry.list_id) == a_list.id)
    ).scalar_one()
    assert left == 0
    for missing_name in ("a-list", "nope"):
        with pytest.raises(UnknownList):
            set_enabled(session, missing_name, True)
        with pytest.raises(UnknownList):
            remove_list(session, missing_name)


def test_a_lists_entries_go_with_its_row_and_need_one(session: Session, tmp_path: Path) -> None:
    """The foreign key from entries to their list holds on every backend (on PostgreSQL
    it is on each partition, made by an import or for an empty list): whatever deletes a
    list's row takes its entries, and no entry can name a list that is gone."""
    path = write(tmp_path, "list.csv", f"md5\n{digest('md5', 1)}\n{digest('md5', 2)}\n")
    import_list(session, path, list_name="imported")
    empty = hashlists.create_list(session, "made-empty")
    assert empty.id is not None
    added = hashlists.add_entries(
        session, empty.id, [{"sha1": digest("sha1", 3), "added_at": dt.datetime.now(dt.UTC)}]
    )
    assert added == 1
    for name, entries in (("imported", 2), ("made-empty", 1)):
        hash_list = session.execute(select(HashList).where(col(HashList.name) == name)).scalar_one()
        count = select(func.count()).where(col(KnownEntry.list_id) == hash_list.id)
        assert session.execute(count).scalar_one() == entries
        session.execute(delete(HashList).where(col(HashList.id) == hash_list.id))
        assert session.execute(count).scalar_one() == 0
        orphan = {
            "list_id": hash_list.id,
            "md5": digest("md5", 9),
            "added_at": dt.datetime.now(dt.UTC),
        }
        with pytest.raises(IntegrityError), session.begin_nested():
            session.execute(insert(KnownEntry).values(orphan))


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "tab\tname"])
def test_list_names_are_checked(session: Session, tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidListName):
        import_list(session, write(tmp_path, "l.csv", "md5\n"), list_name=name)


# --- the block path (PostgreSQL's COPY of well-formed CSV as it is) ------------------------


def expand(item: object) -> list[object]:
    """A block as the entries its lines are (what COPY stores), else the item itself."""
    if not isinstance(item, hashlists.Block):
        return [item]
    text = item.data.decode().replace("\r\n", "\n")
    rows = list(csv.reader(text.splitlines(), delimiter=item.delimiter))
    assert len(rows) == item.lines
    out: list[object] = []
    for number, row in enumerate(rows, item.first_line):
        cells = dict(zip(item.columns, row, strict=True))
        values = tuple(cells.get(c) or None for c in KEY_COLUMNS)
        out.append((number, values, cells.get("category") or None))
    return out


def _both_ways(data: bytes) -> tuple[list[object], list[object], int]:
    plain = list(hashlists.parse(io.BytesIO(data), "csv"))
    fast = list(hashlists.parse(io.BytesIO(data), "csv", blocks=True))
    blocks = sum(isinstance(item, hashlists.Block) for item in fast)
    return plain, [e for item in fast for e in expand(item)], blocks


LINE_KINDS = {
    "good": lambda n: f"{digest('sha256', n)},{digest('md5', n)},{n % 5}",
    "sha256 only": lambda n: f"{digest('sha256', n)},,",
    "md5 only": lambda n: f",{digest('md5', n)},cat {n}",
    "upper": lambda n: f"{digest('sha256', n).upper()},,x",
    "bad hex": lambda n: f"{digest('sha256', n)[:-1]}z,,x",
    "no hash": lambda n: ",,x",
    "blank": lambda n: "",
    "spaces": lambda n: f",{digest('md5', n)},a  b ",
    "double space": lambda n: f",{digest('md5', n)},a  b",
    "extra field": lambda n: f"{digest('sha256', n)},,x,y",
    "short": lambda n: f"{digest('sha256', n)}",
    "long category": lambda n: f",{digest('md5', n)},{'c' * 70}",
    "unicode": lambda n: f",{digest('md5', n)},caf\u00e9",
    "quoted": lambda n: f',{digest("md5", n)},"quoted, with comma"',
    "multi-line": lambda n: f',{digest("md5", n)},"two\nlines"',
    "unclosed quote": lambda n: f',{digest("md5", n)},"open',
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(st.sampled_from(sorted(LINE_KINDS)), min_size=1, max_size=60),
    crlf=st.booleans(),
    final_newline=st.booleans(),
    block_size=st.sampled_from([64, 300, 4096]),
)
def test_blocks_give_exactly_what_line_by_line_parsing_gives(
    kinds: list[str], crlf: bool, final_newline: bool, block_size: int
) -> None:
    newline = "\r\n" if crlf else "\n"
    lines = ["sha256,md5,category", *(LINE_KINDS[k](n) for n, k in enumerate(kinds))]
    data = (newline.join(lines) + (newline if final_newline else "")).encode()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hashlists, "BLOCK_SIZE", block_size)
        plain, fast, _ = _both_ways(data)
    assert fast == plain


def reference_pattern(header: str, delimiter: str, newline: bytes) -> re.Pattern[bytes]:
    """The block rule as one regular expression, line by line: what the block check
    replaced, kept here as the oracle it is compared with."""
    keys = [hashlists._column_key(cell) for cell in header.split(delimiter)]
    names = [hashlists._HASH_COLUMNS.get(key) for key in keys]
    escaped = re.escape(delimiter.encode())
    allowed = bytes(c for c in range(0x21, 0x7F) if chr(c) not in f'"\\{delimiter}')
    char = b"[" + re.escape(allowed) + b"]"
    category = b"(?:" + char + b"(?:" + char + b"| (?=" + char + b")){0,63})?"
    branches = []
    for first in [i for i, t in enumerate(names) if t is not None]:
        cells = []
        for i, hash_type in enumerate(names):
            if hash_type is None:
                cells.append(category)
                continue
            hex_ = b"[0-9a-f]{%d}" % hashlists._HEX_LENGTH[hash_type]
            cells.append(b"" if i < first else hex_ if i == first else b"(?:" + hex_ + b")?")
        branches.append(escaped.join(cells))
    return re.compile(b"(?:" + b"|".join(branches) + b")" + re.escape(newline))


def _field(kind: str, n: int, length: int) -> str:
    value = hashlib.sha256(f"field-{n}".encode()).hexdigest() * 2
    return {
        "hex": value[:length],
        "short": value[: length - 1],
        "long": value[: length + 1],
        "upper": value[:length].upper(),
        "empty": "",
        "space": " " + value[: length - 1],
    }[kind]


CATEGORIES = st.text(
    alphabet=st.sampled_from(list('ab1 Z_-.;,"\\\t\r\xe9/')), max_size=70
) | st.sampled_from(["", "1", "baseline", "a b", "a  b", " a", "a ", "x" * 64, "x" * 65])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=st.sampled_from(
        [
            ("sha256,md5,category", ","),
            ("MD5;SHA1;Category", ";"),
            ("sha1", ","),
            ("category,md5,pdq", ","),
            ("phash,sha256", ","),
        ]
    ),
    rows=st.lists(
        st.tuples(
            st.lists(
                st.sampled_from(["hex", "hex", "empty", "short", "long", "upper", "space"]),
                min_size=3,
                max_size=3,
            ),
            CATEGORIES,
            st.sampled_from(["", "", "", "extra", "missing"]),
        ),
        min_size=1,
        max_size=12,
    ),
    crlf=st.booleans(),
    stray_cr=st.booleans(),
)
def test_the_block_check_takes_exactly_the_lines_the_block_rule_takes(
    layout: tuple[str, str],
    rows: list[tuple[list[str], str, str]],
    crlf: bool,
    stray_cr: bool,
) -> None:
    header, delimiter = layout
    newline = b"\r\n" if crlf else b"\n"
    keys = [hashlists._column_key(cell) for cell in header.split(delimiter)]
    lines: list[bytes] = []
    for n, (kinds, category, shape) in enumerate(rows):
        cells = []
        for i, key in enumerate(keys):
            if key == "category":
                cells.append(category)
            else:
                length = hashlists._HEX_LENGTH[hashlists._HASH_COLUMNS[key]]
                cells.append(_field(kinds[i % 3], n, length))
        if shape == "extra":
            cells.append("x")
        elif shape == "missing" and len(cells) > 1:
            cells.pop()
        line = delimiter.join(cells).encode("utf-8")
        # A line break of the other kind now and then: a lone CR, or LF in a CRLF file.
        ending = b"\n" if (stray_cr and n % 3 == 1) else newline
        lines.append(line + ending)
    block = b"".join(lines)
    layout_ = hashlists._Layout(header.split(delimiter), delimiter)
    check = layout_.block_check(newline)
    assert check is not None
    ends, good = check.lines(block)
    assert ends.tolist() == [sum(len(line) for line in lines[: i + 1]) for i in range(len(lines))]
    pattern = reference_pattern(header, delimiter, newline)
    assert good.tolist() == [pattern.fullmatch(line) is not None for line in lines]


@pytest.mark.parametrize("crlf", [False, True])
def test_the_block_check_on_each_kind_of_category(crlf: bool) -> None:
    """Lines whose hashes are right, with each kind of category the rule tells apart."""
    categories = [
        "",
        "1",
        "baseline",
        "a b",
        "a  b",
        " a",
        "a ",
        " ",
        "x" * 64,
        "x" * 65,
        'q"q',
        "back\\slash",
        "semi;colon",
        "tab\tbed",
        "caf\u00e9",
        "a b c d",
        "CSAM",
        "a\rb",
    ]
    newline = b"\r\n" if crlf else b"\n"
    sha256, md5 = digest("sha256", 1), digest("md5", 1)
    for header, delimiter, line in (
        ("sha256,md5,category", ",", "{sha256},{md5},{category}"),
        ("category;MD5", ";", "{category};{md5}"),
    ):
        lines = [
            line.format(sha256=sha256, md5=md5, category=c).encode() + newline for c in categories
        ]
        check = hashlists._Layout(header.split(delimiter), delimiter).block_check(newline)
        assert check is not None
        _, good = check.lines(b"".join(lines))
        pattern = reference_pattern(header, delimiter, newline)
        expected = [pattern.fullmatch(one) is not None for one in lines]
        assert good.tolist() == expected
        assert expected[:4] == [True, True, True, True]  # the rule's own cases, for the record
        assert expected[4:8] == [False, False, False, False]


def test_well_formed_lines_travel_in_blocks_and_bad_ones_are_still_numbered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hashlists, "BLOCK_SIZE", 4096)
    lines = ["sha256,sha1,md5,category"]
    for n in range(2, 2_002):
        bad = n % 500 == 0
        sha256 = digest("sha256", n)[: 60 if bad else 64]
        lines.append(f"{sha256},{digest('sha1', n)},{digest('md5', n)},{n % 4}")
    plain, fast, blocks = _both_ways(("\n".join(lines) + "\n").encode())
    assert fast == plain
    assert blocks > 20  # most lines went as they were read
    assert [r.line_no for r in plain if isinstance(r, hashlists.Rejected)] == [
        500,
        1000,
        1500,
        2000,
    ]


def test_a_block_path_import_stores_what_it_checked(session: Session, tmp_path: Path) -> None:
    """Whatever the backend: a big, mostly well-formed file imports whole, bad lines out,
    repeats counted once, first category kept."""
    lines = ["md5,sha256,category"]
    for n in range(5_000):
        lines.append(f"{digest('md5', n)},{digest('sha256', n)},{n % 3}")
    lines.append(f"{digest('md5', 7)},{digest('sha256', 7)},repeat")  # a repeat of line 9
    lines.append(f"{digest('md5', 9)},nothex,1")
    path = write(tmp_path, "big.csv", "\n".join(lines) + "\n")
    summary = import_list(session, path, list_name="blocks")
    assert (summary.added, summary.duplicates) == (5_000, 1)
    assert summary.rejected == [(5_003, "sha256: not 64 hex digits")]
    kept = stored(session, "blocks")
    assert kept[("sha256", digest("sha256", 7))] == "1"
    assert len(kept) == 10_000


def test_a_later_list_on_which_thousands_of_seen_media_are_is_matched_whole(
    session: Session,
) -> None:
    # Thousands of match rows: more than one INSERT may bind on PostgreSQL or SQLite.
    from triage.hashlists import get_list
    from triage.matches import match_seen_media
    from triage.models import MediaMatch

    now = dt.datetime.now(dt.UTC)
    count = 8000
    seen_media(session, count, now)
    listing = "sha1,phash\n" + "".join(f"{digest('sha1', n)},{phash(n)}\n" for n in range(count))
    import_list(session, io.BytesIO(listing.encode()), list_name="seen-everything")
    found = match_seen_media(session, get_list(session, "seen-everything").id or 0, now=now)
    assert (found.media, found.near) == (count, 0)
    kinds = session.execute(
        select(col(MediaMatch.kind), func.count()).group_by(col(MediaMatch.kind))
    ).all()
    # Each media item: its SHA-1 exactly, its pHash at distance 0.
    assert sorted((str(kind.value), n) for kind, n in kinds) == [("exact", count), ("near", count)]


def test_an_import_from_an_open_file_takes_its_ids_in_one_block(
    session: Session, tmp_path: Path
) -> None:
    # As `hotline hashes import FILE` hands it over: a file the command opened. Counting
    # its lines first lets the import take one block of ids instead of drawing the
    # shared sequence row by row (a third of the COPY's time on a million lines).
    if session.connection().dialect.name != "postgresql":
        pytest.skip("the id block is PostgreSQL's (SQLite numbers rows itself)")
    lines = [digest("md5", n) for n in range(5)]
    lines.insert(2, "not-a-hash")
    path = write(tmp_path, "open.csv", "md5\n" + "".join(f"{line}\n" for line in lines))
    sequence = "SELECT last_value, is_called FROM known_entry_id_seq"
    last, called = session.connection().exec_driver_sql(sequence).one()
    before = int(last) if called else int(last) - 1  # the last id handed out
    with path.open("rb") as stream:
        summary = import_list(session, stream, list_name="opened")
    assert (summary.added, summary.rejected_count) == (5, 1)
    after = int(session.connection().exec_driver_sql(sequence).one()[0])
    # Reserved: the file's 7 line breaks, plus one. Row by row it would have been 5.
    # (No other test takes ids meanwhile: each runs in a transaction of its own.)
    assert after - before == 8
    ids = [entry.id for entry in entries(session, "opened")]
    assert ids == sorted(ids)
    assert before < ids[0] <= ids[-1] <= after


@pytest.mark.parametrize(
    ("name", "data", "count"),
    [
        ("one line, no line break", f'{{"md5": "{digest("md5", 1)}"}}'.encode(), 1),
        (
            "carriage returns only",
            "".join(f'{{"sha1": "{digest("sha1", n)}"}}\r' for n in range(5)).encode(),
            5,
        ),
        (
            "csv, carriage returns only",
            ("md5\r" + "".join(f"{digest('md5', n)}\r" for n in range(5))).encode(),
            5,
        ),
    ],
)
def test_files_with_few_or_unusual_line_breaks_import_from_an_open_file(
    session: Session, tmp_path: Path, name: str, data: bytes, count: int
) -> None:
    # The id block is sized by counting line breaks: it must never be smaller than
    # the entries the readers find.
    path = tmp_path / "list"
    path.write_bytes(data)
    with path.open("rb") as stream:
        summary = import_list(session, stream, list_name="odd")
    assert (summary.added, summary.rejected_count) == (count, 0), name
    assert len(entries(session, "odd")) == count


def test_a_list_is_matched_only_on_the_hash_types_it_holds(
    session: Session, tmp_path: Path
) -> None:
    from triage.hashlists import get_list
    from triage.matches import list_hashes, match_seen_media

    now = dt.datetime.now(dt.UTC)
    seen_media(session, 4, now)
    # Keys: media 0 by SHA-256, media 1 by SHA-1 (its MD5 beside it), media 2 by MD5.
    mixed = write(
        tmp_path,
        "mixed.csv",
        "sha256,sha1,md5\n"
        f"{digest('sha256', 0)},,\n"
        f",{digest('sha1', 1)},{digest('md5', 1)}\n"
        f",,{digest('md5', 2)}\n",
    )
    import_list(session, mixed, list_name="mixed")
    mixed_id = get_list(session, "mixed").id or 0
    held = list_hashes(session, mixed_id)
    assert (held.keys, held.perceptual) == (
        {HashType.sha256, HashType.sha1, HashType.md5},
        frozenset(),
    )
    assert match_seen_media(session, mixed_id, now=now).media == 3

    only_md5 = write(tmp_path, "md5.csv", f"md5,phash\n{digest('md5', 3)},{phash(3)}\n")
    import_list(session, only_md5, list_name="md5-and-phash")
    list_id = get_list(session, "md5-and-phash").id or 0
    held = list_hashes(session, list_id)
    assert (held.keys, held.perceptual) == ({HashType.md5}, {HashType.phash})
    found = match_seen_media(session, list_id, now=now)
    assert (found.media, found.near, found.hashes) == (1, 0, held)
    # Told the list holds no MD5 keys, matching does not look for them.
    nothing = type(held)(keys=frozenset(), perceptual=frozenset())
    session.execute(delete(hashlists.MediaMatch))
    assert match_seen_media(session, list_id, now=now, hashes=nothing).media == 0
    assert match_seen_media(session, list_id, now=now, hashes=held).media == 1
