"""The worker process keeps freed memory for its next image instead of faulting fresh
pages in, and hands it back after a huge one (glibc only); beat's schedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

# Page faults of each of four 16 MiB buffers, written and freed one after the other.
FAULTS = """
import json, resource, sys
if sys.argv[1] == "worker":
    import hotline.worker
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    buffer = b"x" * (16 << 20)
    del buffer
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""


def page_faults(kind: str) -> list[int]:
    done = subprocess.run(
        [sys.executable, "-c", FAULTS, kind],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    faults: list[int] = json.loads(done.stdout.splitlines()[-1])
    return faults


def test_a_worker_reuses_the_memory_of_the_previous_image() -> None:
    from hotline.memory import keep_freed_memory

    if not keep_freed_memory():
        pytest.skip("the C library is not glibc")
    pages = (16 << 20) // 4096
    # A plain process hands the buffer back and faults it in again at least once more.
    assert sum(page_faults("plain")[1:]) > pages // 2
    # A worker faults it in once, then reuses it.
    assert sum(page_faults("worker")[1:]) < pages // 20


# A worker's memory after a 64-megapixel PNG, before and after its task ends, and
# whether a small picture's task trimmed anything.
TRIM = """
import io, json
from PIL import Image
from hotline.memory import FreedMemoryTrimmer, keep_freed_memory, resident_bytes
from triage.hashing import hash_media

keep_freed_memory()
def png(side):
    buffer = io.BytesIO()
    picture = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    picture.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()
big, small = png(8000), png(256)
trimmer = FreedMemoryTrimmer()
hash_media(small)
quiet = trimmer.after_task()
hash_media(big, max_pixels=100_000_000)
held = resident_bytes()
trimmed = trimmer.after_task()
print(json.dumps([quiet, trimmed, held, resident_bytes()]))
"""


def test_a_worker_hands_back_the_memory_of_a_huge_picture() -> None:
    """Kept freed memory is for the next image like the last: a huge one's is handed
    back when its task ends, so a pool process does not hold it for ever."""
    from hotline.memory import keep_freed_memory

    if not keep_freed_memory():
        pytest.skip("the C library is not glibc")
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", TRIM],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    quiet, trimmed, held, after = json.loads(done.stdout.splitlines()[-1])
    assert not quiet
    assert trimmed
    assert held - after > 200 << 20


SCHEDULE = """
import json
from hotline.worker import app
app.loader.import_default_modules()
print(json.dumps({
    "schedule": {n: [e["task"], e["schedule"]] for n, e in app.conf.beat_schedule.items()},
    "registered": "triage.catch_up_matches" in app.tasks,
}))
"""


def beat(tmp_path: Path, **env: str) -> dict[str, Any]:
    environment = {n: v for n, v in os.environ.items() if not n.startswith("HOTLINE_")}
    done = subprocess.run(
        [sys.executable, "-c", SCHEDULE],
        cwd=REPO,
        env=environment | {"HOTLINE_DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    found: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return found


def test_beat_runs_the_catch_up_of_matches_four_times_a_window(tmp_path: Path) -> None:
    default = beat(tmp_path)
    assert default["registered"]
    assert default["schedule"]["catch-up-matches"] == ["triage.catch_up_matches", 15.0]
    shorter = beat(tmp_path, HOTLINE_NEARDUP_CATCHUP_SECONDS="40")
    assert shorter["schedule"]["catch-up-matches"][1] == 10.0
    assert "catch-up-matches" not in beat(tmp_path, HOTLINE_NEARDUP_CATCHUP_SECONDS="0")["schedule"]
