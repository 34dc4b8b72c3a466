"""What the service needs from systemd: sd_notify, the watchdog, socket activation and journald.

systemd-python is the library; when it is missing (a plain venv) the few protocol pieces we use are
done by hand, following sd_notify(3) and sd_listen_fds(3): a datagram to $NOTIFY_SOCKET, and fds
from 3 when $LISTEN_PID is our pid. Outside systemd everything here is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Callable, Mapping
from typing import ClassVar

from appliance.service.log_limits import RateLimitFilter

__all__ = [
    "LISTEN_FDS_START",
    "listen_sockets",
    "notify",
    "setup_logging",
    "under_journald",
    "watchdog_interval",
    "watchdog_loop",
]

LISTEN_FDS_START = 3

log = logging.getLogger(__name__)


def _notify_datagram(state: str, address: str) -> bool:
    """sd_notify by hand: one datagram to $NOTIFY_SOCKET ('@' means the abstract namespace)."""
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.debug("sd_notify to %s failed: %s", address, exc)
        return False
    return True


def notify(*fields: str) -> bool:
    """Send ``KEY=value`` fields to the service manager. False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    state = "\n".join(fields)
    try:
        from systemd import daemon  # type: ignore[attr-defined]
    except ImportError:
        return _notify_datagram(state, address)
    return bool(daemon.notify(state))


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when no watchdog is set."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


async def watchdog_loop(interval: float, healthy: Callable[[], bool] = lambda: True) -> None:
    """Ping from the event loop itself, so a blocked loop stops the pings and systemd restarts us."""
    while True:
        if healthy():
            notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def listen_sockets() -> list[socket.socket]:
    """Sockets passed by systemd socket activation (LISTEN_FDS), as socket objects; [] if none."""
    fds: list[int]
    try:
        from systemd import daemon  # type: ignore[attr-defined]

        fds = list(daemon.listen_fds())
    except ImportError:
        fds = _listen_fds_by_hand()
    sockets = []
    for fd in fds:
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets


def _listen_fds_by_hand() -> list[int]:
    pid, count = os.environ.get("LISTEN_PID", ""), os.environ.get("LISTEN_FDS", "")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if not (pid.isdigit() and int(pid) == os.getpid() and count.isdigit()):
        return []
    return list(range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)))


def under_journald() -> bool:
    """True when stderr is connected to the journal (systemd sets JOURNAL_STREAM=dev:inode)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


class _PriorityPrefixFormatter(logging.Formatter):
    """Without systemd-python: '<N>' syslog prefixes, which journald turns into priorities."""

    _PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        prio = self._PRIORITY.get(record.levelno, 6)
        return f"<{prio}>{super().format(record)}"


def setup_logging(level: str) -> str:
    """Route the root logger to journald when run by systemd, to stderr otherwise; returns which."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.setLevel(level.upper())
    handler: logging.Handler
    if under_journald():
        try:
            from systemd.journal import JournalHandler

            handler = JournalHandler(SYSLOG_IDENTIFIER="llm-tpu")
            handler.setFormatter(logging.Formatter("%(message)s"))
            kind = "journald"
        except ImportError:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(_PriorityPrefixFormatter("%(name)s: %(message)s"))
            kind = "journald-stderr"
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        kind = "stderr"
    handler.addFilter(RateLimitFilter())  # a flood of one error is one line per 10 s, with a count
    root.addHandler(handler)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return kind
