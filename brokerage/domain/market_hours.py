"""When the market takes orders: always (development, tests) or the NYSE regular session."""

from __future__ import annotations

import warnings
from datetime import date, datetime
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")


def trading_day(moment: datetime) -> date:
    """The exchange's trading day of a moment: its date in New York."""
    return moment.astimezone(NEW_YORK).date()


class MarketClock(Protocol):
    def is_open(self, at: datetime) -> bool: ...

    def session_close(self, at: datetime) -> datetime | None:
        """When the session open at `at` closes (a DAY order placed then expires then); None when the market never
        closes, or is closed at `at`."""
        ...


class AlwaysOpen:
    def is_open(self, at: datetime) -> bool:
        return True

    def session_close(self, at: datetime) -> datetime | None:
        return None


class NyseRegularSession:
    """09:30-16:00 New York time on NYSE trading days, with its holidays and early closes.

    The calendar comes from exchange_calendars; answers are cached per minute, as sessions change on minutes.
    """

    def __init__(self) -> None:
        import exchange_calendars  # imported here: it pulls in pandas, which the always-open clock never needs

        with _quiet_pandas():
            self._calendar = exchange_calendars.get_calendar("XNYS")

    def is_open(self, at: datetime) -> bool:
        return self._is_open_on_minute(at.replace(second=0, microsecond=0))

    def session_close(self, at: datetime) -> datetime | None:
        return self._close_of_minute(at.replace(second=0, microsecond=0))

    @lru_cache(maxsize=4)  # noqa: B019 - as _is_open_on_minute
    def _close_of_minute(self, minute: datetime) -> datetime | None:
        import pandas

        if not self._is_open_on_minute(minute):
            return None
        with _quiet_pandas():
            session = self._calendar.minute_to_session(pandas.Timestamp(minute))
            close: datetime = self._calendar.session_close(session).to_pydatetime()
        return close

    @lru_cache(maxsize=4)  # noqa: B019 - one clock per process, a handful of minutes cached
    def _is_open_on_minute(self, minute: datetime) -> bool:
        import pandas

        timestamp = pandas.Timestamp(minute)
        with _quiet_pandas():
            if not self._calendar.first_minute <= timestamp <= self._calendar.last_minute:
                return False  # beyond the published calendar: no session is known
            return bool(self._calendar.is_open_on_minute(timestamp))


def _quiet_pandas() -> warnings.catch_warnings:  # type: ignore[type-arg]
    """exchange_calendars trips pandas deprecation warnings that say nothing about our use of it."""
    return warnings.catch_warnings(action="ignore")
