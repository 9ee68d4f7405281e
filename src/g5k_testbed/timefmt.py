"""Times as Grid'5000 writes them: epoch seconds in JSON, Europe/Paris wall clock in OAR reservations.

>>> format_paris(1700000000)
'2023-11-14 23:13:20'
>>> parse_reservation("2023-11-14 23:13:20", now=0)
(1700000000, None)
"""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import formatdate
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
_DATE = re.compile(r"^\s*(?:(\d{4})-(\d{1,2})-(\d{1,2})\s+)?(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


class ReservationSyntaxError(ValueError):
    pass


def format_paris(epoch: float) -> str:
    """`YYYY-MM-DD hh:mm:ss` in Europe/Paris time, as OAR prints dates."""
    return datetime.fromtimestamp(int(epoch), PARIS).strftime("%Y-%m-%d %H:%M:%S")


def http_date(epoch: float) -> str:
    """RFC 7231 date for the HTTP `Date` header."""
    return formatdate(epoch, usegmt=True)


def _parse_one(text: str, now: float, which: str) -> int:
    if text.strip().lower() == "now":
        return int(now)
    m = _DATE.match(text)
    if not m:
        raise ReservationSyntaxError(
            f"Syntax error in reservation {which} date, should at least match the format: "
            "'YYYY-MM-DD hh:mm:ss'. Please see documentation for available date syntaxes."
        )
    year, month, day, hour, minute, second = m.groups()
    try:
        if year is None:
            today = datetime.fromtimestamp(now, PARIS)
            year, month, day = today.year, today.month, today.day
        local = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second or 0), tzinfo=PARIS
        )
    except ValueError as exc:
        raise ReservationSyntaxError(
            f"Syntax error in reservation {which} date, should at least match the format: "
            "'YYYY-MM-DD hh:mm:ss'. Please see documentation for available date syntaxes."
        ) from exc
    return int(local.timestamp())


def parse_reservation(text: str, now: float) -> tuple[int, int | None]:
    """`start[,end]` in Europe/Paris wall clock (`YYYY-MM-DD hh:mm[:ss]`, `hh:mm[:ss]` today, or `now`)."""
    start_text, _, end_text = text.partition(",")
    start = _parse_one(start_text, now, "start")
    end = _parse_one(end_text, now, "end") if end_text.strip() else None
    return start, end
