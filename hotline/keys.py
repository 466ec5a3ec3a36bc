"""Fernet ciphers from comma-separated keys (the first encrypts, all decrypt, so keys
rotate), with a development fallback: a key generated once in the data directory.

Production (``HOTLINE_ENV=production``) refuses empty keys in the settings, so the
fallback only ever serves a laptop or a demonstration.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, MultiFernet


def development_key(path: Path) -> bytes:
    """The key in ``path``, created (mode 0600) by the first process that needs it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


def fernet(keys: str, fallback: Path) -> MultiFernet:
    """A cipher of the configured keys, or of the development key at ``fallback``."""
    parsed = [k.strip().encode() for k in keys.split(",") if k.strip()]
    return MultiFernet([Fernet(k) for k in parsed or [development_key(fallback)]])
