"""Fetch files: HTTP(S) with resume (Range), a progress bar and sha256; Sophgo's SFTP through ``dfss``.

A download lands in ``<dest>.part`` and becomes ``<dest>`` only when complete and verified (fsync,
rename), so an interrupted transfer or a full disk never leaves a file that looks finished, and the
next attempt resumes from the ``.part``.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from appliance.atomic import sha256_file
from appliance.errors import DownloadError

if TYPE_CHECKING:
    import requests

__all__ = ["DFSS_HOST", "dfss_download", "download_file"]

DFSS_HOST = "open@sophgo.com"
CHUNK = 64 << 10  # small enough that a dropped connection keeps most of what arrived


class _Progress:
    def __init__(self, label: str, total: int | None, enabled: bool, stream: IO[str] = sys.stderr) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.enabled = enabled
        self.start = time.monotonic()
        self.last = 0.0

    def update(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < 0.2):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-6) / (1 << 20)
        if self.total:
            frac = min(1.0, done / self.total)
            bar = "#" * int(frac * 30)
            text = f"{self.label} [{bar:<30}] {frac:4.0%} {done / (1 << 20):.1f}/{self.total / (1 << 20):.1f} MiB"
        else:
            text = f"{self.label} {done / (1 << 20):.1f} MiB"
        self.stream.write(f"\r{text} {rate:.1f} MiB/s" + ("\n" if final else ""))
        self.stream.flush()


def _finish(part: Path, dest: Path, sha256: str | None) -> Path:
    if sha256:
        got = sha256_file(part)
        if got != sha256.lower():
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{dest.name}: sha256 {got} does not match the expected {sha256}",
                hint="the download was corrupted or the source changed; it was deleted, run the command again",
            )
    with open(part, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(part, dest)
    return dest


def download_file(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    progress: bool = True,
    session: requests.Session | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part``; verify ``sha256`` when given."""
    import requests  # here, not at the top: `llm-tpu serve` imports this module and never downloads

    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256.lower()):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    http = session or requests.Session()
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        resp = http.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.RequestException as exc:
        raise DownloadError(f"cannot reach {url}: {exc}", hint="check the network and run again") from None
    with resp:
        if resp.status_code == 416 and have:  # we already have every byte
            return _finish(part, dest, sha256)
        if resp.status_code not in (200, 206):
            raise DownloadError(f"{url} answered HTTP {resp.status_code}", hint="check the URL")
        if resp.status_code == 200:
            have = 0  # the server ignored Range: start over
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        bar = _Progress(dest.name, total, progress)
        done = have
        try:
            with open(part, "ab" if have else "wb") as out:
                for block in resp.iter_content(CHUNK):
                    out.write(block)
                    done += len(block)
                    bar.update(done)
                out.flush()
                os.fsync(out.fileno())
        except requests.RequestException as exc:  # before OSError: requests' errors subclass it
            raise DownloadError(
                f"download of {dest.name} interrupted after {done} bytes: {type(exc).__name__}",
                hint="run the same command again: it resumes where it stopped",
            ) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DownloadError(
                    f"disk full while downloading {dest.name} ({done} bytes kept in {part.name})",
                    hint=f"free space on {dest.parent} and run the same command again: it resumes",
                ) from None
            raise DownloadError(f"cannot write {part}: {exc.strerror}") from None
        bar.update(done, final=True)
    if total is not None and done != total:
        raise DownloadError(
            f"download of {dest.name} ended early ({done} of {total} bytes)",
            hint="run the same command again: it resumes where it stopped",
        )
    return _finish(part, dest, sha256)


def _grown(work: Path) -> int:
    """Bytes dfss has written so far (it may write under a temporary name: count every file)."""
    total = 0
    for f in work.iterdir():
        try:
            if f.is_file() and not f.name.startswith(".dfss"):
                total += f.stat().st_size
        except OSError:  # renamed under us
            continue
    return total


def dfss_download(
    remote: str,
    dest_dir: Path,
    *,
    sha256: str | None = None,
    timeout: float = 6 * 3600,
    progress: bool = True,
    expected_bytes: int | None = None,
    stream: IO[str] | None = None,
    poll_s: float = 0.5,
) -> Path:
    """``python3 -m dfss --url=open@sophgo.com:<path>`` into ``dest_dir``; returns the file.

    dfss itself says nothing while it copies gigabytes, so the file's growth is shown instead (against
    ``expected_bytes`` when known); its own output goes to ``.dfss.log`` for the error message.
    """
    remote = remote.split(":", 1)[1] if remote.startswith(DFSS_HOST + ":") else remote
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = Path(remote).name
    dest = dest_dir / name
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256.lower()):
        return dest
    # dfss writes the file under its own name in the working directory; give it a private one so
    # that a half-written file never sits where a finished one is expected.
    work = dest_dir / ".dfss"
    work.mkdir(exist_ok=True)
    log_path = work / ".dfss.log"
    cmd = [sys.executable, "-m", "dfss", f"--url={DFSS_HOST}:{remote}"]
    bar = _Progress(name, expected_bytes, progress, stream or sys.stderr)
    deadline = time.monotonic() + timeout
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT)
            try:
                while True:
                    try:
                        proc.wait(timeout=poll_s)
                        break
                    except subprocess.TimeoutExpired:
                        bar.update(_grown(work))
                    if time.monotonic() > deadline:
                        raise DownloadError(
                            f"dfss did not finish {remote} within {timeout:.0f} s",
                            hint="run the same command again; check the network to Sophgo's server",
                        )
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    except OSError as exc:
        raise DownloadError(f"dfss failed for {remote}: {exc}") from None
    got = work / name
    bar.update(_grown(work), final=True)
    if proc.returncode != 0 or not got.is_file():
        detail = log_path.read_text(encoding="utf-8", errors="replace").strip()[-300:]
        raise DownloadError(
            f"dfss could not fetch {remote}: {detail or 'no file written'}",
            hint="pip install dfss, and check that the box can reach Sophgo's SFTP server",
        )
    return _finish(got, dest, sha256)
