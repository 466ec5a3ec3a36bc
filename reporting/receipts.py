"""Receipts: random tokens shown to the reporter once and stored only as a SHA-256 digest.

A receipt has 160 random bits, so a plain digest is enough: there is nothing to
guess that a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import secrets

RECEIPT_BYTES = 20
RECEIPT_MAX_LENGTH = 64


def new_receipt() -> str:
    return secrets.token_urlsafe(RECEIPT_BYTES)


def receipt_digest(receipt: str) -> str:
    return hashlib.sha256(receipt.encode("utf-8", "surrogatepass")).hexdigest()
