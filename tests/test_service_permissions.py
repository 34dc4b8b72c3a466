"""Socket permissions: mode 0660 and the configured group; a user outside the group cannot connect.

Creates a group and two system users (CI runs as root) and removes them afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.service import in_process

SBIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _admin(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PATH": SBIN_PATH})


@pytest.fixture
def accounts() -> Iterator[tuple[str, str, str]]:
    if os.geteuid() != 0:
        pytest.fail("this test creates users and must run as root (CI does)")
    tag = uuid.uuid4().hex[:6]
    group, member, outsider = f"llmtg{tag}", f"llmtm{tag}", f"llmto{tag}"
    _admin("groupadd", "--system", group)
    try:
        _admin("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "-G", group, member)
        _admin("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", outsider)
        yield group, member, outsider
    finally:
        for user in (member, outsider):
            subprocess.run(["userdel", user], capture_output=True, env={**os.environ, "PATH": SBIN_PATH})
        subprocess.run(["groupdel", group], capture_output=True, env={**os.environ, "PATH": SBIN_PATH})


def _curl_as(user: str, sock: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        # runuser sets the user's supplementary groups (subprocess's user= does not).
        [
            "runuser",
            "-u",
            user,
            "--",
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--unix-socket",
            sock,
            "http://localhost/health",
        ],
        env={**os.environ, "PATH": SBIN_PATH},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_only_group_members_can_connect(accounts: tuple[str, str, str]) -> None:
    group, member, outsider = accounts
    directory = Path(tempfile.mkdtemp(prefix="llm-tpu-perm-", dir="/tmp"))
    directory.chmod(0o755)  # the directory lets everyone reach the socket; only its mode and group decide
    try:
        with in_process(directory, server={"socket_group": group}) as svc:
            st = os.stat(svc.socket)
            assert st.st_mode & 0o777 == 0o660
            import grp

            assert grp.getgrgid(st.st_gid).gr_name == group
            allowed = _curl_as(member, svc.socket)
            assert allowed.returncode == 0 and '"ok"' in allowed.stdout, allowed.stderr
            denied = _curl_as(outsider, svc.socket)
            assert denied.returncode != 0
            assert "Permission denied" in denied.stderr or "Couldn't connect" in denied.stderr
    finally:
        shutil.rmtree(directory, ignore_errors=True)
