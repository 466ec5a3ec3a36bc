"""End to end: reports of image URLs served from 127.0.0.1, processed by real worker
processes on PostgreSQL and Redis, against the pure hashing rate of the same images.

    .venv/bin/python bench/pipeline.py [--reports 1000] [--workers 2]
        [--width 1600 --height 1200] [--intake-first] [--images-per-page N] [--repeat N]

Baseline: ``hash_media`` over the same images in as many processes as there are
workers (forked with the images, set up as a worker process is, timed after start-up).
Pipeline: every report submitted through the intake service while the workers run, then
the time until every target is queued; with ``--intake-first``, every report is
submitted before the workers start and the workers are timed from the first queued
target. With ``--images-per-page N`` the reports are pages linking N images each (the
rates count images). Target: pipeline >= 70 % of the baseline, for reports of image
URLs. With ``--repeat N`` the baseline and the pipeline are measured N times in turn
and the median ratio is judged. Also prints the CPU per image of each group of
processes (workers' pool processes, Celery's main processes, PostgreSQL, Redis, the
image server, this process), read from /proc.

Uses its own schema (``hotline_bench``) and Redis database (13) and removes them
afterwards. Images are synthetic and exist only in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import ipaddress
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from PIL import Image
from sqlalchemy import create_engine, func, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.scratch import drop_schema, fresh_schema, without_settings  # noqa: E402
from tests.fixtures.images import make_image  # noqa: E402

SCHEMA = "hotline_bench"


def pictures(count: int, size: tuple[int, int]) -> list[bytes]:
    """``count`` different pictures as JPEGs: drawn small and scaled up, which is quick
    and still gives each its own perceptual hash."""
    small = (max(64, size[0] // 4), max(48, size[1] // 4))
    out = []
    for seed in range(count):
        buffer = io.BytesIO()
        picture = make_image(10_000 + seed, small).resize(size, Image.Resampling.BILINEAR)
        picture.save(buffer, "JPEG", quality=88)
        out.append(buffer.getvalue())
    return out


# The images, set before the hashing processes are forked: they inherit them rather than
# receive them through a pipe (pickling 400 12-megapixel JPEGs took a second of the
# baseline's time, which made hashing look slower than it is).
IMAGES: list[bytes] = []
READY: list[Any] = []  # a barrier of the hashing processes


def _hash_share(share: tuple[int, int]) -> int:
    from triage.hashing import hash_media

    first, step = share
    mine = IMAGES[first::step]
    for data in mine:
        hash_media(data)
    return len(mine)


def _like_a_worker() -> None:
    # The same allocator setting as a worker process (hotline.memory.keep_freed_memory),
    # so that the baseline is hashing at its best, not hashing plus page faults.
    from hotline.memory import keep_freed_memory
    from triage.hashing import hash_media

    keep_freed_memory()
    hash_media(IMAGES[0])  # imports and first-use set-up, outside the timing


def _ready(_: int) -> None:
    # Returns once every process has come this far: each runs exactly one of these.
    READY[0].wait(timeout=120)


def hashing_rate(images: list[bytes], processes: int) -> float:
    IMAGES[:] = images
    context = multiprocessing.get_context("fork")
    READY[:] = [context.Barrier(processes)]
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_like_a_worker) as pool:
        list(pool.map(_ready, range(processes)))  # every process started and set up
        start = time.perf_counter()
        done = sum(pool.map(_hash_share, [(i, processes) for i in range(processes)]))
    return done / (time.perf_counter() - start)


class CpuMeter:
    """CPU seconds (user + system) spent by each group of processes on this machine, read
    from /proc (Linux): the workers (with their pool processes), PostgreSQL, Redis, the
    image server and this process (the intake). Empty where /proc is missing.

    Every PostgreSQL and Redis process of the machine counts, and a process that ends
    within the window takes its CPU with it: run it on a machine doing nothing else."""

    TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, workers: list[int], server: int) -> None:
        self.workers, self.server = set(workers), server

    def _group(self, pid: int, comm: str, parents: dict[int, int]) -> str | None:
        if pid == os.getpid():
            return "intake (this process)"
        if pid == self.server:
            return "image server"
        if comm.startswith("postgres"):
            return "PostgreSQL"
        if comm.startswith("redis"):
            return "Redis"
        if pid in self.workers:
            return "workers: Celery main"
        if parents.get(pid) in self.workers:
            return "workers: pool processes"
        return None

    def read(self) -> dict[str, float]:
        rows: dict[int, tuple[str, int, float]] = {}
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            comm = raw[raw.index("(") + 1 : raw.rindex(")")]
            fields = raw[raw.rindex(")") + 2 :].split()
            rows[int(entry.name)] = (comm, int(fields[1]), (int(fields[11]) + int(fields[12])))
        parents = {pid: parent for pid, (_, parent, _) in rows.items()}
        totals: dict[str, float] = {}
        for pid, (comm, _, ticks) in rows.items():
            group = self._group(pid, comm, parents)
            if group is not None:
                totals[group] = totals.get(group, 0.0) + ticks / self.TICK
        return totals


def breakdown(before: dict[str, float], after: dict[str, float], images: int) -> str:
    """Milliseconds of CPU per image, by group."""
    if not images:
        return "  (no targets in the window)"
    lines = []
    total = 0.0
    for group in sorted(after, key=lambda g: -(after[g] - before.get(g, 0.0))):
        spent = (after[group] - before.get(group, 0.0)) * 1000 / images
        total += spent
        lines.append(f"  {group:<24}{spent:7.1f} ms")
    lines.append(f"  {'together':<24}{total:7.1f} ms")
    return "\n".join(lines)


def serve(images: list[bytes], addresses: Any, per_page: int = 1) -> None:
    """Serve the images on 127.0.0.1 until terminated; hands back the URLs to report:
    the images, or with ``per_page`` > 1 pages of that many images each.

    Stands in for the remote sites, whose CPU is not the hotline's: one asyncio loop
    that answers ``GET /img/N.jpg`` with a prepared response and closes, so that its
    share of this machine's CPU stays small (the test suite's threaded server took
    0.8 ms per image, a sixth of what the workers spend besides hashing).
    """
    responses = {
        f"/img/{i}.jpg".encode(): b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\n"
        + f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
        for i, data in enumerate(images)
    }
    for page in range(len(images) // per_page if per_page > 1 else 0):
        body = "".join(
            f'<img src="/img/{i}.jpg">\n' for i in range(page * per_page, (page + 1) * per_page)
        ).encode()
        responses[f"/page/{page}.html".encode()] = (
            b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    missing = b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            writer.write(responses.get(path, missing))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def run() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0, backlog=512)
        port = server.sockets[0].getsockname()[1]
        if per_page > 1:
            pages = len(images) // per_page
            addresses.put([f"http://127.0.0.1:{port}/page/{i}.html" for i in range(pages)])
        else:
            addresses.put([f"http://127.0.0.1:{port}/img/{i}.jpg" for i in range(len(images))])
        await server.serve_forever()

    asyncio.run(run())


@dataclass
class Run:
    """One timed run of the pipeline."""

    rate: float  # images per second
    images: int  # the images of the targets in the window
    queued: int
    reports: int
    submitted: float  # seconds the intake took
    cpu: str  # CPU per image by group (empty without /proc)


def run_pipeline(args: argparse.Namespace, images: list[bytes], per_page: int) -> Run:
    """Reports in, workers on PostgreSQL and Redis, until every target has ended; in a
    fresh schema and Redis database, removed afterwards."""
    admin = create_engine(args.database)
    database = fresh_schema(admin, args.database, SCHEMA)
    redis.Redis.from_url(args.redis).flushdb()
    env = {
        **without_settings(dict(os.environ)),
        "HOTLINE_DATA_DIR": tempfile.mkdtemp(prefix="hotline-bench-"),
        "HOTLINE_DATABASE_URL": database,
        "HOTLINE_BROKER_URL": args.redis,
        "HOTLINE_REDIS_URL": args.redis,
        "HOTLINE_FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
        "HOTLINE_FETCH_PORTS": "1024-65535",
        "HOTLINE_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
    }
    os.environ.update(env)
    from hotline.db import session_scope, utcnow
    from hotline.migrate import upgrade
    from reporting.models import ReportCategory, ReportSource, Target, TargetStatus
    from reporting.schemas import ReportCreate
    from reporting.service import submit_report

    upgrade(database)
    # The images are served by a process of their own, as a remote site would serve
    # them: threads of this process fought the report submission for the GIL, which
    # slowed both (43 % -> 48-51 % of the hashing rate at 1600x1200).
    context = multiprocessing.get_context("fork")
    addresses: Any = context.Queue()
    server = context.Process(target=serve, args=(images, addresses, per_page), daemon=True)
    server.start()
    urls: list[str] = addresses.get(timeout=60)
    assert server.pid is not None

    def submit_all() -> float:
        began = time.perf_counter()
        for url in urls:
            with session_scope() as session:
                submit_report(
                    session,
                    ReportCreate(url=url, category=ReportCategory.csam),
                    source=ReportSource.api,
                    now=utcnow(),
                    max_url_length=4096,
                    allow_networks=[ipaddress.ip_network("127.0.0.0/8")],
                )
        return time.perf_counter() - began

    def start_workers() -> list[subprocess.Popen[bytes]]:
        return [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "hotline.worker",
                    "worker",
                    "--concurrency",
                    "1",
                    "--loglevel",
                    os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "--hostname",
                    f"bench{n}@%h",
                ],
                env=env,
                cwd=REPO,
            )
            for n in range(args.workers)
        ]

    engine = create_engine(database)
    target = Target.__table__  # type: ignore[attr-defined]
    ended = target.c.status.in_([TargetStatus.queued.value, TargetStatus.unreachable.value])

    def count_done() -> int:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    select(func.count()).select_from(target).where(ended)
                ).scalar_one()
            )

    workers: list[subprocess.Popen[bytes]] = []
    try:
        if args.intake_first:
            submitted = submit_all()
            workers = start_workers()
            meter = CpuMeter([w.pid for w in workers], server.pid)
            # The window opens at the first queued target: worker start-up is not in it.
            while (first_done := count_done()) == 0:
                time.sleep(0.05)
            cpu_before, start = meter.read(), time.perf_counter()
        else:
            workers = start_workers()
            meter = CpuMeter([w.pid for w in workers], server.pid)
            time.sleep(4)  # workers connect and load their indexes
            first_done = 0
            cpu_before, start = meter.read(), time.perf_counter()
            submitted = submit_all()
        done = first_done
        while done < len(urls):
            time.sleep(0.2)
            done = count_done()
            if time.perf_counter() - start > 1800:
                raise SystemExit(f"only {done} of {len(urls)} done after 30 minutes")
        elapsed = time.perf_counter() - start
        cpu_after = meter.read()
        with engine.connect() as connection:
            queued = connection.execute(
                select(func.count())
                .select_from(target)
                .where(target.c.status == TargetStatus.queued.value)
            ).scalar_one()
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
        server.terminate()
        server.join(10)
        drop_schema(admin, SCHEMA)
        redis.Redis.from_url(args.redis).flushdb()
    measured = (len(urls) - first_done) * per_page  # images of the targets in the window
    return Run(
        rate=measured / elapsed,
        images=measured,
        queued=int(queued),
        reports=len(urls),
        submitted=submitted,
        cpu=breakdown(cpu_before, cpu_after, measured) if cpu_after else "",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1200)
    parser.add_argument(
        "--images-per-page",
        type=int,
        default=1,
        help="1: report image URLs; N > 1: report pages linking N images each "
        "(--reports pages, N times as many images)",
    )
    parser.add_argument("--database", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument(
        "--intake-first",
        action="store_true",
        help="submit every report before the workers start and time the workers alone "
        "(from the first queued target), as when the API runs on other machines",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure the baseline and the pipeline this many times, in turn, and judge "
        "the median ratio (single runs on a shared VM vary by several points)",
    )
    args = parser.parse_args()

    per_page = max(1, args.images_per_page)
    count = args.reports * per_page
    print(f"generating {count} {args.width}x{args.height} JPEGs in memory ...", flush=True)
    images = pictures(count, (args.width, args.height))
    size = f"{args.width}x{args.height} JPEG" + (f", pages of {per_page}" if per_page > 1 else "")
    ratios: list[float] = []
    for n in range(max(1, args.repeat)):
        if args.repeat > 1:
            print(f"-- run {n + 1} of {args.repeat}")
        baseline = hashing_rate(images, args.workers)
        run = run_pipeline(args, images, per_page)
        ratios.append(run.rate / baseline)
        print(f"pure hashing ({args.workers} processes) {baseline:8.1f} img/s")
        how = (
            f"reports submitted first in {run.submitted:.1f} s, then the workers"
            if args.intake_first
            else f"reports submitted while the workers run, in {run.submitted:.1f} s"
        )
        print(
            f"end to end ({args.workers} workers)      {run.rate:8.1f} img/s   "
            f"ratio {ratios[-1]:.0%}   ({run.queued} queued of {run.reports}; {how}; {size};"
            " PostgreSQL + Redis)"
        )
        if run.cpu:
            hashing = args.workers / baseline * 1000
            print(f"CPU per image in the window (pure hashing: {hashing:.1f} ms per image):")
            print(run.cpu)
    if len(ratios) > 1:
        listed = ", ".join(f"{r:.0%}" for r in ratios)
        print(
            f"median ratio of {len(ratios)} runs: {statistics.median(ratios):.0%} "
            f"(runs: {listed}; target >= 70 %)"
        )


if __name__ == "__main__":
    main()
