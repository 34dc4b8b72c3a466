"""Rate-limited logging: one line per message and interval, then how many were dropped.

Under a flood (1,100 connections failing to be accepted) the same line used to be logged thousands of
times a second: 60 MB of "Too many open files" in 15 s. The filter lets the first record of each
message template through, drops the repeats for ``interval_s``, and appends the count of what it
dropped to the next one it lets through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitFilter"]

_MAX_KEYS = 1024


class RateLimitFilter(logging.Filter):
    def __init__(self, interval_s: float = 10.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock
        self._windows: dict[tuple[str, int, str], list[float]] = {}  # key -> [window start, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        window = self._windows.get(key)
        if window is not None and now - window[0] < self.interval_s:
            window[1] += 1
            return False
        if window is not None and window[1]:
            record.msg = (
                f"{record.getMessage()} ({int(window[1])} similar messages suppressed in the last "
                f"{now - window[0]:.0f} s)"
            )
            record.args = None
        if len(self._windows) >= _MAX_KEYS:
            self._windows.clear()
        self._windows[key] = [now, 0]
        return True
