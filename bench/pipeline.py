"""End to end: reports of image URLs served from 127.0.0.1, processed by real worker
processes on PostgreSQL and Redis, against the pure hashing rate of the same images.

    .venv/bin/python bench/pipeline.py [--reports 1000] [--workers 2]

Baseline: ``hash_media`` over the same images in as many processes as there are
workers. Pipeline: every report submitted through the intake service, then the
time until every target is queued. Target: pipeline >= 70 % of the baseline.
Uses its own schema (``hotline_bench``) and Redis database (13) and removes
them afterwards. Images are synthetic and exist only in memory.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import redis
from PIL import Image
from sqlalchemy import create_engine, func, select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.images import make_image  # noqa: E402
from tests.fixtures.servers import LocalHTTPServer  # noqa: E402

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


def _hash_all(chunk: list[bytes]) -> int:
    from triage.hashing import hash_media

    for data in chunk:
        hash_media(data)
    return len(chunk)


def hashing_rate(images: list[bytes], processes: int) -> float:
    chunks = [images[i::processes] for i in range(processes)]
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_hash_all, [c[:2] for c in chunks]))  # warm up imports
        start = time.perf_counter()
        done = sum(pool.map(_hash_all, chunks))
    return done / (time.perf_counter() - start)


def serve(images: list[bytes], addresses: Any) -> None:
    """Serve the images on 127.0.0.1 until terminated; hands their URLs back."""
    server = LocalHTTPServer().start()
    addresses.put([server.route(f"/img/{i}.jpg", body=data) for i, data in enumerate(images)])
    while True:
        time.sleep(3600)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1200)
    parser.add_argument("--database", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()

    print(f"generating {args.reports} {args.width}x{args.height} JPEGs in memory ...", flush=True)
    images = pictures(args.reports, (args.width, args.height))

    baseline = hashing_rate(images, args.workers)

    admin = create_engine(args.database)
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        connection.execute(text(f"CREATE SCHEMA {SCHEMA}"))
    joiner = "&" if "?" in args.database else "?"
    database = f"{args.database}{joiner}options=-csearch_path%3D{SCHEMA}"
    redis.Redis.from_url(args.redis).flushdb()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")},
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
    server = context.Process(target=serve, args=(images, addresses), daemon=True)
    server.start()
    urls: list[str] = addresses.get(timeout=60)
    workers = [
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
    try:
        time.sleep(4)  # workers connect and load their indexes
        start = time.perf_counter()
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
        submitted = time.perf_counter() - start
        done = 0
        while done < len(urls):
            time.sleep(0.2)
            with engine.connect() as connection:
                done = connection.execute(
                    select(func.count())
                    .select_from(Target.__table__)  # type: ignore[attr-defined]
                    .where(
                        Target.__table__.c.status.in_(
                            [TargetStatus.queued.value, TargetStatus.unreachable.value]
                        )
                    )  # type: ignore[attr-defined]
                ).scalar_one()
            if time.perf_counter() - start > 1800:
                raise SystemExit(f"only {done} of {len(urls)} done after 30 minutes")
        elapsed = time.perf_counter() - start
        with engine.connect() as connection:
            queued = connection.execute(
                select(func.count())
                .select_from(Target.__table__)  # type: ignore[attr-defined]
                .where(Target.__table__.c.status == TargetStatus.queued.value)  # type: ignore[attr-defined]
            ).scalar_one()
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
        server.terminate()
        server.join(10)
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        redis.Redis.from_url(args.redis).flushdb()
    rate = len(urls) / elapsed
    print(f"pure hashing ({args.workers} processes) {baseline:8.1f} img/s")
    ratio = rate / baseline
    size = f"{args.width}x{args.height} JPEG"
    print(
        f"end to end ({args.workers} workers)      {rate:8.1f} img/s   ratio {ratio:.0%}   "
        f"({queued} queued of {len(urls)}, submitted in {submitted:.1f} s, {size}, "
        "PostgreSQL + Redis)"
    )


if __name__ == "__main__":
    main()
