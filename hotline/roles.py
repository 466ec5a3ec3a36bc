"""Staff roles: a module of their own, free of the database, so that the command line
can offer them without loading SQLAlchemy. What each may do is ``hotline.authz``."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    analyst = "analyst"
    supervisor = "supervisor"
    admin = "admin"
    auditor = "auditor"
