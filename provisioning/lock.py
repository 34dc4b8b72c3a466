"""One provisioning run at a time: an ``flock`` on ``<state dir>/lock`` that says who holds it.

``apply``, ``rollback``, ``verify``, ``firstboot`` and ``status`` (which may finish an interrupted
install) all write the boot image or the state records; two at once deleted each other's work
directory and, once in three tries, overwrote the factory backup. The lock is a kernel ``flock``: it
goes away with its process, so a crashed run never leaves a stale lock. The holder writes its pid,
command and start time into the file, so that a second run can say who it is waiting for; it waits up
to a bounded time, then gives up with that information.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator

from appliance.config.provisioning import ProvisioningSettings
from appliance.errors import ProvisioningError
from provisioning.state import now_iso

__all__ = ["DEFAULT_LOCK_TIMEOUT_S", "provision_lock"]

DEFAULT_LOCK_TIMEOUT_S = 300.0
_POLL_S = 0.1


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} ({info['command']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet said who it is"


@contextlib.contextmanager
def provision_lock(
    settings: ProvisioningSettings,
    command: str,
    *,
    timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the provisioning lock for the block; wait up to ``timeout_s`` for another holder."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    path = settings.state_dir / "lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ProvisioningError(
            f"cannot open the provisioning lock {path}: {exc.strerror}", hint="run as root"
        ) from None
    try:
        deadline = time.monotonic() + timeout_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(fd)
                if time.monotonic() >= deadline:
                    raise ProvisioningError(
                        f"another provisioning run holds the lock {path}: {holder}",
                        hint=f"wait for it to finish, or pass --lock-timeout SECONDS to wait longer "
                        f"(waited {timeout_s:g} s)",
                    ) from None
                if not told and on_wait is not None:
                    on_wait(f"waiting for the provisioning lock held by {holder} (up to {timeout_s:g} s)")
                    told = True
                time.sleep(_POLL_S)
        record = json.dumps({"pid": os.getpid(), "command": command, "since": now_iso()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock
