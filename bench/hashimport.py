"""``hotline hashes import`` of a large list against a plain COPY of the same file.

    HOTLINE_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        .venv/bin/python bench/hashimport.py [--lines 1000000] [--hashes-per-line 3|2|1]
        [--media 0] [--repeat 3]

Target: the import (the whole command, process start to exit) takes at most 3x the time
of ``COPY bare_table FROM STDIN`` of the same file into an unindexed table with the file's
columns, on PostgreSQL.

The list is generated: random SHA-256/SHA-1/MD5 values (hash lists are not content), with
a few malformed lines at known numbers, written to a temporary file. The import runs the
real command (``python -m hotline.cli_hashes import FILE --list bench``, progress bar on
stderr) and is timed from process start to exit; the baseline is timed from the COPY's
start to its commit. Both run in the database ``hotline_bench`` on the server of
``HOTLINE_DATABASE_URL`` (created if missing, migrated), never in the database the test
suite resets, so the bench can run beside the tests.

``--media N``: the hotline has seen N media items before the import (random hashes, 1 %
of them on the list), so the import also matches them against the list, as it does in
a hotline that has been running for a while. Without it there are none.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BENCH_DATABASE = "hotline_bench"
TYPES = ("sha256", "sha1", "md5")
LENGTHS = {"sha256": 64, "sha1": 40, "md5": 32}


def bench_url(url: str) -> str:
    """The URL of ``hotline_bench`` on the same server, created if missing."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        sys.exit("bench/hashimport.py needs PostgreSQL: set HOTLINE_DATABASE_URL")
    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DATABASE,)
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')
    return parsed.set(database=BENCH_DATABASE).render_as_string(hide_password=False)


def generate(path: Path, lines: int, per_line: int, bad_every: int) -> list[int]:
    """Write the list; return the line numbers of the malformed lines (the header is
    line 1)."""
    bad: list[int] = []
    with path.open("w", encoding="ascii", newline="") as out:
        out.write("sha256,sha1,md5,category\n")
        chunk: list[str] = []
        for i in range(lines):
            line_no = i + 2
            cells = dict.fromkeys(TYPES, "")
            # 3: all three; 2: SHA-1 and MD5, as Project VIC and ICSE lists have them;
            # 1: one of the three in turn.
            kinds = {3: TYPES, 2: TYPES[1:]}.get(per_line, (TYPES[i % 3],))
            for kind in kinds:
                cells[kind] = os.urandom(LENGTHS[kind] // 2).hex()
            if bad_every and i % bad_every == bad_every // 2:
                cells[kinds[0]] = cells[kinds[0]][:-3] + "xyz"  # still one cell per column
                bad.append(line_no)
            chunk.append(f"{cells['sha256']},{cells['sha1']},{cells['md5']},{i % 4}\n")
            if len(chunk) == 10_000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))
    return bad


def seen_media(dsn: str, path: Path, count: int) -> int:
    """Make ``media`` hold ``count`` rows with random hashes, the first 1 % of them
    carrying one hash of a list line (its first) in that hash's column; returns how many
    are on the list."""
    on_list = count // 100
    rows = []
    with path.open(encoding="ascii") as source:
        next(source)
        for _ in range(on_list):
            values = next(source).rstrip("\n").split(",")
            cells = dict(zip((*TYPES, "category"), values, strict=True))
            rows.append({t: cells[t] for t in TYPES if cells[t]})
    with psycopg.connect(dsn) as connection:
        connection.execute("TRUNCATE media CASCADE")  # the bench database: only its own rows
        with (
            connection.cursor() as cursor,
            cursor.copy(
                "COPY media (sha256, sha1, md5, phash, pdq, pdq_quality, mime, kind, size,"
                " first_seen_at) FROM STDIN"
            ) as copy,
        ):
            for i in range(count):
                listed = rows[i] if i < on_list else {}
                hashes = [listed.get(t) or os.urandom(LENGTHS[t] // 2).hex() for t in TYPES]
                copy.write_row(
                    (
                        *hashes,
                        os.urandom(8).hex(),
                        os.urandom(32).hex(),
                        90,
                        "image/jpeg",
                        "image",
                        100_000,
                        "2026-01-01T00:00:00Z",
                    )
                )
        connection.execute("ANALYZE media")
    return on_list


def checkpoint(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("CHECKPOINT")


def stream_copy(connection: psycopg.Connection[Any], statement: str, path: Path) -> None:
    with (
        connection.cursor() as cursor,
        cursor.copy(statement) as copy,
        path.open("rb") as source,
    ):
        while data := source.read(1 << 20):
            copy.write(data)


def plain_copy(dsn: str, path: Path) -> float:
    """The baseline: the file as it is into an unindexed table with its columns."""
    with psycopg.connect(dsn) as connection:
        connection.execute("DROP TABLE IF EXISTS bench_bare")
        connection.execute(
            "CREATE TABLE bench_bare (sha256 text, sha1 text, md5 text, category text)"
        )
        connection.commit()
        checkpoint(dsn)
        start = time.perf_counter()
        stream_copy(connection, "COPY bench_bare FROM STDIN (FORMAT csv, HEADER true)", path)
        connection.commit()
        elapsed = time.perf_counter() - start
        connection.execute("DROP TABLE bench_bare")
        connection.commit()
    return elapsed


def reset(dsn: str) -> None:
    """Remove the list the last import made (its partition with it)."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        row = connection.execute("SELECT id FROM hash_list WHERE name = 'bench'").fetchone()
        if row is not None:
            list_id = int(row[0])
            connection.execute("DELETE FROM media_match WHERE list_id = %s", (list_id,))
            connection.execute(f"DROP TABLE IF EXISTS known_entry_{list_id}")
            connection.execute("DELETE FROM hash_list WHERE id = %s", (list_id,))
    checkpoint(dsn)


def hotline_import(url: str, dsn: str, path: Path) -> tuple[float, str]:
    reset(dsn)
    env = {**os.environ, "HOTLINE_DATABASE_URL": url, "HOTLINE_LOG_LEVEL": "WARNING"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "hotline.cli_hashes", "import", str(path), "--list", "bench"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return time.perf_counter() - start, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument(
        "--hashes-per-line",
        type=int,
        choices=(1, 2, 3),
        default=3,
        help="3: sha256, sha1 and md5 on every line; 2: sha1 and md5; 1: one of the three",
    )
    parser.add_argument("--bad-every", type=int, default=100_000, help="one bad line per N")
    parser.add_argument(
        "--media", type=int, default=0, help="media seen before the import (1 %% on the list)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    url = os.environ.get("HOTLINE_DATABASE_URL", "")
    if not url:
        print(f"warning: HOTLINE_DATABASE_URL is not set; using {DEFAULT_URL}", file=sys.stderr)
        url = DEFAULT_URL
    url = bench_url(url)
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    from hotline.migrate import upgrade

    upgrade(url)

    with tempfile.TemporaryDirectory(prefix="hotline-bench-") as tmp:
        path = Path(tmp) / "list.csv"
        start = time.perf_counter()
        bad = generate(path, args.lines, args.hashes_per_line, args.bad_every)
        size = path.stat().st_size
        print(
            f"generated {args.lines:,} lines ({size / 1e6:.0f} MB, {args.hashes_per_line} "
            f"hash(es) per line, {len(bad)} malformed) in {time.perf_counter() - start:.1f} s",
            file=sys.stderr,
        )
        on_list = seen_media(dsn, path, args.media)
        copies: list[float] = []
        imports: list[float] = []
        summary = ""
        for _ in range(args.repeat):
            copies.append(plain_copy(dsn, path))
            elapsed, summary = hotline_import(url, dsn, path)
            imports.append(elapsed)
            print(
                f"  import {elapsed:.2f} s   plain COPY {copies[-1]:.2f} s   "
                f"ratio {elapsed / copies[-1]:.2f}x",
                file=sys.stderr,
            )

    print(summary, end="")
    reported = [
        int(line.split()[2].rstrip(":"))
        for line in summary.splitlines()[1:]
        if line.startswith("  rejected line ")
    ]
    assert reported == bad, f"rejected lines {reported} != malformed lines {bad}"
    expected = args.lines - len(bad)
    with psycopg.connect(dsn) as connection:
        row = connection.execute(
            "SELECT count(*), count(sha256), count(sha1), count(md5) FROM known_entry"
            " JOIN hash_list ON hash_list.id = list_id WHERE name = 'bench'"
        ).fetchone()
        stored, *hashes = (int(n) for n in row) if row else (0, 0, 0, 0)
    assert stored == expected, f"{stored:,} entries stored, {expected:,} expected"
    assert sum(hashes) == expected * args.hashes_per_line, f"{hashes} hashes stored"
    if args.media:
        matched = f"{on_list:,} of the {args.media:,} media seen before matched"
        assert f"{on_list:,} media item" in summary or on_list == 0, summary
    else:
        matched = "no media seen before"
    reset(dsn)
    imported, copied = statistics.median(imports), statistics.median(copies)
    print(
        f"import {args.lines:,} lines: {imported:.2f} s | plain COPY: {copied:.2f} s | "
        f"ratio {imported / copied:.2f}x (target <= 3x)\n"
        f"[median of {args.repeat}; {stored:,} entries with {sum(hashes):,} hashes stored; "
        f"the malformed lines were reported by number; {matched}]"
    )


if __name__ == "__main__":
    main()
