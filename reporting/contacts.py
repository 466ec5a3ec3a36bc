"""Encryption of reporters' optional contact details (Fernet, rotatable keys).

Contacts are only ever decrypted for staff; no response of the public API
contains them. In development a key is generated once in the data directory.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import MultiFernet

from hotline.keys import fernet
from hotline.settings import get_settings


@lru_cache
def contact_cipher() -> MultiFernet:
    settings = get_settings()
    return fernet(
        settings.contact_keys.get_secret_value(), settings.resolved_data_dir / "contact.key"
    )


def encrypt_contact(contact: str) -> str:
    return contact_cipher().encrypt(contact.encode("utf-8")).decode("ascii")


def decrypt_contact(token: str) -> str:
    return contact_cipher().decrypt(token.encode("ascii")).decode("utf-8")
