"""Ollama's ``keep_alive`` values: seconds as a number, or a Go-style duration string ("5m", "1h30m", "300ms")."""

from __future__ import annotations

import re

__all__ = ["parse_keep_alive"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_keep_alive(value: float | str | None) -> float | None:
    """Seconds to stay loaded: 0 unloads at once, None never (a negative value); ValueError says what is wrong."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("keep_alive must be a number of seconds or a duration such as '5m'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        try:
            seconds = sign * float(body)
        except ValueError:
            parts = _PART.findall(body)
            if not body or "".join(n + u for n, u in parts) != body:
                raise ValueError(
                    f"keep_alive {value!r} is not a duration: use seconds or e.g. '30s', '5m', '1h30m', '-1'"
                ) from None
            seconds = sign * sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError("keep_alive must be finite")
    return None if seconds < 0 else seconds
