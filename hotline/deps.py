"""FastAPI dependencies shared by every package's routes, as typed aliases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session

from hotline.db import session_scope, utcnow
from hotline.settings import Settings, get_settings


def get_session() -> Iterator[Session]:
    # scope="function" below: the unit of work commits (and sends its task
    # messages) when the endpoint returns, before the response goes out.
    with session_scope() as session:
        yield session


def peer_address(request: Request) -> tuple[str | None, str | None]:
    """The connecting peer and the raw X-Forwarded-For header; neither is ever stored."""
    return (request.client.host if request.client else None, request.headers.get("x-forwarded-for"))


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
NowDep = Annotated[dt.datetime, Depends(utcnow)]
PeerDep = Annotated[tuple[str | None, str | None], Depends(peer_address)]
