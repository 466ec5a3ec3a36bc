"""Running a console command (``hotline ...``) to its end, and ending the process fast.

A command has printed everything and committed by the time its function returns. What
is left is the interpreter's own teardown: freeing every module (SQLAlchemy, pydantic,
rich...), about 0.1 s that nobody waits for usefully. ``run`` skips it the way mypy's
``hard_exit`` does: output and logs flushed, database connections closed, then
``os._exit`` with the command's exit status. An exception other than ``SystemExit``
is not caught: it ends the process the normal way, with its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import Any, NoReturn


def hard_exit(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed pipe (| head) or a closed stream
            stream.flush()
    logging.shutdown()
    db = sys.modules.get("hotline.db")
    if db is not None and db.get_engine.cache_info().currsize:
        db.get_engine().dispose()  # the server sees a clean goodbye, not a dropped socket
    os._exit(code)


def run(command: Callable[..., Any], **kwargs: Any) -> NoReturn:
    """Call a Typer app (or a main function) and end the process with its exit status."""
    try:
        command(**kwargs)
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = int(exc.code or 0)
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    hard_exit(code)
