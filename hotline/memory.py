"""Memory of processes that fetch, hash or show reported content: freed buffers kept
for the next image, nothing of it left behind by a crash or a warning.

Its own module, free of side effects, so that a benchmark's plain hashing processes can
be set up as a worker is (``bench/pipeline.py``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import warnings
from typing import Any


def seal_content() -> None:
    """For a process that fetches or decodes reported content (a worker, the API with
    its safe view, the re-check command): a crash in a native decoder writes no core
    file (it would hold the fetched bytes and their pixels), and Pillow's warnings are
    not shown (some quote values read from the file, such as an EXIF tag's number)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    warnings.filterwarnings("ignore", module="PIL")


# glibc's mallopt parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _libc() -> Any | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return None


def keep_freed_memory(limit: int = 64 << 20) -> bool:
    """Have glibc keep up to ``limit`` bytes of freed memory for the next allocation
    rather than hand it back to the kernel; False where the C library is not glibc.

    By default a worker returned the buffers of each image it decoded and hashed, and
    faulted fresh zero-filled pages in for the next: ~2,300 page faults and 4.5 ms of
    kernel time per 1600x1200 JPEG, a third more CPU than the hashing itself. Freed
    memory stays in the process (whose core dumps are off), as it always did below
    glibc's thresholds.
    """
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    # A fixed mmap threshold also stops glibc from moving both thresholds by itself.
    return bool(mallopt(_M_MMAP_THRESHOLD, limit // 2) and mallopt(_M_TRIM_THRESHOLD, limit))


def resident_bytes() -> int:
    """This process's resident memory now (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class FreedMemoryTrimmer:
    """Hands freed memory back to the kernel after a task that left much of it: what
    ``keep_freed_memory`` keeps is meant for the next image like the last, and the
    heap's free chunks in between are never trimmed. After a 100-megapixel PNG a pool
    process stayed at 487 MB, 59 MB after ``malloc_trim`` (30 to 60 ms); after the
    usual image there is nothing to do but read ``/proc/self/statm``."""

    def __init__(self, slack: int = 128 << 20) -> None:
        self._slack = slack
        self._trim = getattr(_libc(), "malloc_trim", None)
        self._floor = resident_bytes()

    def after_task(self) -> bool:
        """Trim if resident memory grew by more than ``slack`` since the last trim (or
        the start); returns whether it trimmed."""
        if self._trim is None:
            return False
        if resident_bytes() - self._floor <= self._slack:
            return False
        self._trim(0)
        self._floor = resident_bytes()
        return True
