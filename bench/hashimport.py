"""``hotline hashes import`` of a large list against a plain COPY of the same file.

    HOTLINE_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        .venv/bin/python bench/hashimport.py [--lines 1000000] [--hashes-per-line 3] [--repeat 3]

Target: the import takes at most 3x the time of ``COPY bare_table FROM STDIN`` of the same
file into an unindexed table with the file's columns, on PostgreSQL.

The list is generated: random SHA-256/SHA-1/MD5 values (hash lists are not content), with
a few malformed lines at known numbers, written to a temporary file. The import runs the
real command (``python -m hotline.cli_hashes import FILE --list bench``, progress bar on
stderr) and is timed from process start to exit; the baseline is timed from the COPY's
start to its commit. Both run in the database ``hotline_bench`` on the server of
``HOTLINE_DATABASE_URL`` (created if missing, migrated), never in the database the test
suite resets, so the bench can run beside the tests.
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


def generate(path: Path, floor: Path, lines: int, per_line: int, bad_every: int) -> list[int]:
    """Write the list, and its valid rows in known_hash's COPY format to ``floor``
    (unsorted); return the line numbers of the malformed lines (the header is line 1)."""
    bad: list[int] = []
    with (
        path.open("w", encoding="ascii", newline="") as out,
        floor.open("w", encoding="ascii") as rows,
    ):
        out.write("sha256,sha1,md5,category\n")
        chunk: list[str] = []
        valid: list[str] = []
        for i in range(lines):
            line_no = i + 2
            cells = dict.fromkeys(TYPES, "")
            kinds = TYPES if per_line == 3 else (TYPES[i % 3],)
            for kind in kinds:
                cells[kind] = os.urandom(LENGTHS[kind] // 2).hex()
            if bad_every and i % bad_every == bad_every // 2:
                cells[kinds[0]] = cells[kinds[0]][:-3] + "xyz"  # still one cell per column
                bad.append(line_no)
            else:
                valid.extend(f"{kind}\t{cells[kind]}\t{i % 4}\n" for kind in kinds)
            chunk.append(f"{cells['sha256']},{cells['sha1']},{cells['md5']},{i % 4}\n")
            if len(chunk) == 10_000:
                out.write("".join(chunk))
                rows.write("".join(valid))
                chunk.clear()
                valid.clear()
        out.write("".join(chunk))
        rows.write("".join(valid))
    return bad


def sort_floor(floor: Path, list_id: int) -> Path:
    """The floor rows sorted like the index, with the list id and a time added."""
    ordered = floor.with_suffix(".sorted")
    sort = subprocess.run(
        ["sort", "-S", "512M", "-T", str(floor.parent), str(floor)],  # noqa: S607
        env={**os.environ, "LC_ALL": "C"},
        stdout=subprocess.PIPE,
        check=True,
    )
    with ordered.open("wb") as out:
        for line in sort.stdout.splitlines(keepends=True):
            out.write(b"%d\t%s\t2024-01-01 00:00:00+00\n" % (list_id, line.rstrip(b"\n")))
    floor.unlink()
    return ordered


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
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("TRUNCATE known_hash, media_match")
        connection.execute("DELETE FROM hash_list WHERE name = 'bench'")
        connection.execute("VACUUM ANALYZE known_hash")
    checkpoint(dsn)


def floor_copy(dsn: str, rows: Path) -> float:
    """The least any import can cost on this schema: the valid rows, already sorted and
    deduplicated, COPYed straight into known_hash (indexes, foreign key and all)."""
    reset(dsn)
    with psycopg.connect(dsn) as connection:
        start = time.perf_counter()
        stream_copy(
            connection,
            "COPY known_hash (list_id, hash_type, value, category, added_at) FROM STDIN",
            rows,
        )
        connection.commit()
        elapsed = time.perf_counter() - start
    return elapsed


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
        choices=(1, 3),
        default=3,
        help="3: sha256, sha1 and md5 on every line; 1: one of them per line",
    )
    parser.add_argument("--bad-every", type=int, default=100_000, help="one bad line per N")
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

    with psycopg.connect(dsn) as connection:
        found = connection.execute("SELECT id FROM hash_list WHERE name = 'bench-floor'")
        row = (
            found.fetchone()
            or connection.execute(
                "INSERT INTO hash_list (name, description, enabled, own, created_at)"
                " VALUES ('bench-floor', 'bench/hashimport.py', false, false, now()) RETURNING id"
            ).fetchone()
        )
        assert row is not None
        floor_list = int(row[0])

    with tempfile.TemporaryDirectory(prefix="hotline-bench-") as tmp:
        path = Path(tmp) / "list.csv"
        start = time.perf_counter()
        bad = generate(path, Path(tmp) / "floor", args.lines, args.hashes_per_line, args.bad_every)
        floor_rows = sort_floor(Path(tmp) / "floor", floor_list)
        size = path.stat().st_size
        print(
            f"generated {args.lines:,} lines ({size / 1e6:.0f} MB, {args.hashes_per_line} "
            f"hash(es) per line, {len(bad)} malformed) in {time.perf_counter() - start:.1f} s",
            file=sys.stderr,
        )
        copies: list[float] = []
        floors: list[float] = []
        imports: list[float] = []
        summary = ""
        for _ in range(args.repeat):
            copies.append(plain_copy(dsn, path))
            floors.append(floor_copy(dsn, floor_rows))
            elapsed, summary = hotline_import(url, dsn, path)
            imports.append(elapsed)
            print(
                f"  import {elapsed:.2f} s   plain COPY {copies[-1]:.2f} s   "
                f"floor {floors[-1]:.2f} s",
                file=sys.stderr,
            )

    print(summary, end="")
    reported = [
        int(line.split()[2].rstrip(":")) for line in summary.splitlines()[1:] if ":" in line
    ]
    assert reported == bad, f"rejected lines {reported} != malformed lines {bad}"
    expected = (args.lines - len(bad)) * args.hashes_per_line
    with psycopg.connect(dsn) as connection:
        row = connection.execute(
            "SELECT count(*) FROM known_hash JOIN hash_list ON hash_list.id = list_id"
            " WHERE name = 'bench'"
        ).fetchone()
        stored = int(row[0]) if row else 0
    assert stored == expected, f"{stored:,} hashes stored, {expected:,} expected"
    reset(dsn)
    imported, copied = statistics.median(imports), statistics.median(copies)
    floor = statistics.median(floors)
    print(
        f"import {args.lines:,} lines: {imported:.1f} s | plain COPY: {copied:.1f} s | "
        f"ratio {imported / copied:.1f}x (target <= 3x)\n"
        f"floor, the valid rows pre-sorted and COPYed straight into known_hash: {floor:.1f} s "
        f"= {floor / copied:.1f}x plain COPY; import = {imported / floor:.1f}x floor\n"
        f"[median of {args.repeat}; {stored:,} hashes stored; the malformed lines were "
        f"reported by number]"
    )


if __name__ == "__main__":
    main()
