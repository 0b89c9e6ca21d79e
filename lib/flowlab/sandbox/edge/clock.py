"""The simulated clock: next-page and next-session timing (reference §5, §10 "Time model") in seconds.

Streaming audiences reach the edge minutes after the event and batch ones after the daily run; a clock that
only moves when told makes those delays visible in a test or a journey without waiting. The clock starts at
a fixed instant, so demo data, tests and screenshots are the same on every machine.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Final

__all__ = ["DEMO_START", "SimClock", "iso_ms"]

#: Where the demo clock starts: the Sitecore demo's epoch (2026-10-01), 09:00 UTC, a shop's morning.
DEMO_START: Final = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
_MAX_ADVANCE_S: Final = 366 * 86_400  # one call moves at most a year: enough for any journey


def iso_ms(epoch_ms: float) -> str:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds and a ``Z``, as XDM ``timestamp`` prints."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class SimClock:
    """A clock that stands still until :meth:`advance` moves it forward (never back)."""

    def __init__(self, start: datetime = DEMO_START) -> None:
        if start.tzinfo is None:
            raise ValueError("the clock's start needs a time zone")
        self._start_ms = int(start.timestamp() * 1000)
        self._now_ms = self._start_ms
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        """Simulated now, epoch milliseconds."""
        return self._now_ms

    def now(self) -> datetime:
        """Simulated now, an aware UTC datetime."""
        return datetime.fromtimestamp(self._now_ms / 1000, UTC)

    def iso(self) -> str:
        return iso_ms(self._now_ms)

    def advance(self, seconds: float) -> int:
        """Move forward by ``seconds`` (0 to one year); returns the new now in epoch milliseconds."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds != seconds:
            raise ValueError("advanceSeconds must be a number of seconds")
        if seconds < 0:
            raise ValueError("advanceSeconds must be 0 or more: the simulated clock never goes back")
        if seconds > _MAX_ADVANCE_S:
            raise ValueError(f"advanceSeconds must be at most {_MAX_ADVANCE_S} (one year) per call")
        with self._lock:
            self._now_ms += int(round(seconds * 1000))
            return self._now_ms

    def reset(self) -> None:
        """Back to the start (``POST /sandbox/reset``)."""
        with self._lock:
            self._now_ms = self._start_ms
