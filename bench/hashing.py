"""Hashing throughput: ``triage.hashing.hash_media`` against the straightforward pipeline.

    .venv/bin/python bench/hashing.py [--quick]

Both sides produce the same outputs from the same bytes: SHA-256, SHA-1, MD5, pHash
(imagehash) and PDQ with quality (pdqhash). The baseline decodes at full size, lets
``imagehash.phash`` convert and resize the full image and hands the full RGB array to
``pdqhash.compute``; ``hash_media`` decodes once, JPEGs at reduced scale straight to
luma. Pictures are generated in memory (``tests/fixtures/images.py``), a few distinct
ones per size; every round hashes all of them on both sides, interleaved, in this one
process (every library involved runs on one thread), and the median round counts.
Also printed: the largest Hamming distance between the two sides' hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import imagehash
import numpy as np
import pdqhash
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.images import encode, make_image
from triage.hashing import hash_media

Hashes = tuple[str, str]


def baseline(data: bytes) -> Hashes:
    """The pipeline one writes first: full decode, each library on the full image."""
    hashlib.sha256(data).hexdigest()
    hashlib.sha1(data, usedforsecurity=False).hexdigest()
    hashlib.md5(data, usedforsecurity=False).hexdigest()
    img = Image.open(io.BytesIO(data))
    img.load()
    phash = str(imagehash.phash(img))
    bits, _quality = pdqhash.compute(np.asarray(img.convert("RGB")))
    return phash, np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def optimized(data: bytes) -> Hashes:
    result = hash_media(data)
    assert result.phash is not None
    assert result.pdq is not None
    return result.phash, result.pdq


def distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def round_rate(fn: Callable[[bytes], Hashes], items: list[bytes]) -> float:
    start = time.perf_counter()
    for data in items:
        fn(data)
    return len(items) / (time.perf_counter() - start)


def line(label: str, items: list[bytes], rounds: int) -> None:
    for data in items:  # warm up caches, imports and allocator
        baseline(data)
        optimized(data)
    fast, slow = [], []
    for _ in range(rounds):
        fast.append(round_rate(optimized, items))
        slow.append(round_rate(baseline, items))
    opt_rate, base_rate = statistics.median(fast), statistics.median(slow)
    pairs = [(optimized(data), baseline(data)) for data in items]
    phash_max = max(distance(o[0], b[0]) for o, b in pairs)
    pdq_max = max(distance(o[1], b[1]) for o, b in pairs)
    print(
        f"{label:<11} optimized {opt_rate:6.1f} img/s  baseline {base_rate:5.1f} img/s  "
        f"ratio {opt_rate / base_rate:5.1f}x   (max distance to baseline: "
        f"pHash {phash_max}/64, PDQ {pdq_max}/256; {len(items)} images, {rounds} rounds)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and rounds")
    args = parser.parse_args()
    distinct, rounds = (2, 3) if args.quick else (4, 7)

    def jpegs(size: tuple[int, int], seed: int) -> list[bytes]:
        return [encode(make_image(seed + i, size), "JPEG", quality=90) for i in range(distinct)]

    print(f"Pillow {Image.__version__}, one process", flush=True)
    line("12MP JPEG", jpegs((4000, 3000), 1000), rounds)
    line("1080p JPEG", jpegs((1920, 1080), 2000), rounds)
    line(
        "1080p PNG",
        [encode(make_image(3000 + i, (1920, 1080)), "PNG") for i in range(distinct)],
        max(2, rounds // 2),
    )


if __name__ == "__main__":
    main()
