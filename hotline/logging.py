"""Logging for every process. Log lines carry ids, never reported URLs, descriptions,
contact details, receipts or client addresses; the access log names route templates.
"""

from __future__ import annotations

import logging
import logging.config


def configure_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d: %(message)s"}
            },
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
            "root": {"handlers": ["stderr"], "level": level.upper()},
            "loggers": {
                # uvicorn's own access log prints client addresses and raw paths.
                "uvicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
                "uvicorn.error": {"level": level.upper()},
                # At DEBUG these print reported hosts, headers and bits of fetched files.
                "httpcore": {"level": "WARNING"},
                "httpx": {"level": "WARNING"},
                "PIL": {"level": "WARNING"},
            },
        }
    )
