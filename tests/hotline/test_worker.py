"""The worker process keeps freed memory for its next image instead of faulting fresh
pages in (glibc only)."""

from __future__ import annotations

import json
import subprocess
import sys

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
