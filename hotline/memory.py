"""Memory of processes that fetch, hash or show reported content: freed buffers kept
for the next image, nothing of it left behind by a crash or a warning.

Its own module, free of side effects, so that a benchmark's plain hashing processes can
be set up as a worker is (``bench/pipeline.py``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import warnings


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


def keep_freed_memory(limit: int = 64 << 20) -> bool:
    """Have glibc keep up to ``limit`` bytes of freed memory for the next allocation
    rather than hand it back to the kernel; False where the C library is not glibc.

    By default a worker returned the buffers of each image it decoded and hashed, and
    faulted fresh zero-filled pages in for the next: ~2,300 page faults and 4.5 ms of
    kernel time per 1600x1200 JPEG, a third more CPU than the hashing itself. Freed
    memory stays in the process (whose core dumps are off), as it always did below
    glibc's thresholds.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    # A fixed mmap threshold also stops glibc from moving both thresholds by itself.
    return bool(mallopt(_M_MMAP_THRESHOLD, limit // 2) and mallopt(_M_TRIM_THRESHOLD, limit))
