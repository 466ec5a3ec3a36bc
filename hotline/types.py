"""Field types shared by the request bodies of every package."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and lone surrogates cannot be encoded.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


StorableText = Annotated[str, AfterValidator(_storable)]
"""A string that PostgreSQL and SQLite can store and compare: no NUL, valid Unicode."""
