"""The part of a target's queue priority that counts its reports.

Reports keep arriving after a target was processed, so this part is kept up to date by
the database: intake adds it when a report comes in, the worker when it queues the
target (``triage.priority`` ranks the rest). The reason naming the count is added
when a target is shown, from the count as it is then.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import case

REPORT_BONUS_CAP = 40  # reports beyond the 41st add no more priority


def report_bonus(report_count: int) -> int:
    """The priority a target reported ``report_count`` times gets for it: one per report
    after the first, at most ``REPORT_BONUS_CAP``."""
    return min(max(report_count - 1, 0), REPORT_BONUS_CAP)


def report_bonus_sql(report_count: Any) -> Any:
    """``report_bonus`` of a column, evaluated on the row as the statement finds it."""
    return case(
        (report_count > REPORT_BONUS_CAP, REPORT_BONUS_CAP),
        (report_count > 1, report_count - 1),
        else_=0,
    )


def next_report_bonus_sql(report_count: Any) -> Any:
    """What one more report adds: 1 until the cap is reached (``report_count`` before)."""
    return case((report_count <= REPORT_BONUS_CAP, 1), else_=0)


_REPORTED = re.compile(r"reported \d+ times")


def reasons_with_reports(stored: str | None, report_count: int) -> list[str]:
    """The stored priority reasons (JSON) and the report count's reason, as of now."""
    reasons: list[str] = json.loads(stored or "[]")
    kept = [r for r in reasons if not _REPORTED.fullmatch(r)]  # as stored before 0009
    return kept + ([f"reported {report_count} times"] if report_count > 1 else [])
