"""Encryption of reporters' optional contact details (Fernet, rotatable keys).

Contacts are only ever decrypted for staff; no response of the public API
contains them. In development a key is generated once in the data directory.
"""

from __future__ import annotations

import os
from functools import lru_cache

from cryptography.fernet import Fernet, MultiFernet

from hotline.settings import get_settings


def _development_key() -> bytes:
    path = get_settings().resolved_data_dir / "contact.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


@lru_cache
def contact_cipher() -> MultiFernet:
    configured = get_settings().contact_keys.get_secret_value()
    keys = [k.strip().encode() for k in configured.split(",") if k.strip()]
    return MultiFernet([Fernet(k) for k in keys or [_development_key()]])


def encrypt_contact(contact: str) -> str:
    return contact_cipher().encrypt(contact.encode("utf-8")).decode("ascii")


def decrypt_contact(token: str) -> str:
    return contact_cipher().decrypt(token.encode("ascii")).decode("utf-8")
