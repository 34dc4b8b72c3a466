"""The Debian package, for real: a signed apt repository, clean minbase chroots of Debian 11 and 12.

Per release: add the signed repository in dist/repo (signature checked by apt), `apt-get install
llm-tpu-appliance`, run the CLI, start the installed service the way its unit does (no systemd as
PID 1 in a chroot: the unit's ExecStart under systemd-socket-activate, with NOTIFY_SOCKET, as the
unit's user) and chat with it over /run/llm-tpu/llm.sock with curl; a broken conffile and a missing
model; `systemd-analyze verify` on the installed units; upgrade to a higher version (the same build
repacked with a new version: the maintainer scripts and conffile handling are what an upgrade
exercises); remove keeps configuration and models; purge leaves no file behind.

Needs root and dist/*.deb with the repository dist/repo; `make package-test` makes them.
The chroots come from tests/support/debian_chroot.py (cached tarballs).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.debian_chroot import SYSTEM_PATH, Chroot, ChrootSpec

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from make_repo import build_repo  # noqa: E402

DIST = REPO / "dist"
PACKAGE = "llm-tpu-appliance"
KEYRING = "/usr/share/keyrings/llm-tpu-appliance.gpg"
SOURCES = "/etc/apt/sources.list.d/llm-tpu-appliance.list"
TINY_HF = REPO / "tests/fixtures/tiny-qwen2/hf"
UNITS = ("llm-tpu.service", "llm-tpu.socket", "llm-tpu-firstboot.service", "llm-tpu-provision-verify.service")
# Paths whose contents change with any apt/dpkg run, not files a package creates.
VOLATILE = re.compile(
    r"^/(proc|dev|run|sys|tmp|srv/repo|var/(cache|log|lib/(apt|dpkg)|tmp)|root)(/|$)"
    r"|^/etc/(ld\.so\.cache|(passwd|group|shadow|gshadow|subuid|subgid)-?)$"
)

pytestmark = [pytest.mark.package]


def _deb(arch: str = "amd64") -> Path:
    debs = sorted(DIST.glob(f"{PACKAGE}_*_{arch}.deb"), key=lambda p: p.stat().st_mtime)
    if not debs or not (DIST / "repo/dists/stable/InRelease").exists():
        pytest.fail(
            "no package or repository in dist/: run `make package-test` (it builds the amd64 package and its signed repository)"
        )
    return debs[-1]


def _install_repo(box: Chroot, repo: Path) -> None:
    if box.path("/srv/repo").exists():
        shutil.rmtree(box.path("/srv/repo"))
    box.copy_in(repo, "/srv/repo")
    box.copy_in(repo / "llm-tpu-appliance.gpg", KEYRING)
    box.path(SOURCES).write_text(f"deb [signed-by={KEYRING}] file:/srv/repo stable main\n")


def _apt(box: Chroot, *args: str) -> subprocess.CompletedProcess[str]:
    return box.run(["apt-get", "-y", "-q", *args], capture_output=True, stdin=subprocess.DEVNULL, timeout=600)


def _files(box: Chroot) -> set[str]:
    out = box.run(["find", "/", "-xdev", "-mindepth", "1"], capture_output=True).stdout
    return {p for p in out.splitlines() if not VOLATILE.search(p)}


def _unit(box: Chroot, name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(box.path(f"/lib/systemd/system/{name}").read_text())
    return parser


class Service:
    """llm-tpu.service as its unit runs it: ExecStart, User, Environment, RuntimeDirectory, a
    socket passed by systemd-socket-activate and a notify socket that records READY/STATUS."""

    def __init__(self, box: Chroot) -> None:
        unit = _unit(box, "llm-tpu.service")["Service"]
        self.box = box
        user, group = unit["User"], unit["Group"]
        box.run(["install", "-d", "-o", user, "-g", group, "-m", "0755", f"/run/{unit['RuntimeDirectory']}"])
        notify_path = box.path("/run/test-notify.sock")
        notify_path.unlink(missing_ok=True)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(notify_path))
        os.chmod(notify_path, 0o777)
        self.messages: list[str] = []
        self.socket = box.path("/run/llm-tpu/llm.sock")
        self.socket.unlink(missing_ok=True)
        env = dict(e.split("=", 1) for e in unit.get("Environment", "").split())
        env |= {"NOTIFY_SOCKET": "/run/test-notify.sock", "PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8"}
        setenv = [a for k, v in env.items() for a in ("-E", f"{k}={v}")]
        inner = ["/usr/bin/setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups", "--"]
        # systemd-socket-activate listens, and starts the service at the first connection (as systemd
        # does with llm-tpu.socket); the child's environment is PATH, LISTEN_FDS/LISTEN_PID and -E.
        activate = ["systemd-socket-activate", "-l", str(self.socket), *setenv]
        self.proc = subprocess.Popen(
            [*activate, "/usr/sbin/chroot", str(box.root), *inner, *unit["ExecStart"].split()],
            env={"PATH": SYSTEM_PATH},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not self.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as first:
            first.connect(str(self.socket))  # the activating connection

    def wait_notify(self, field: str, timeout: float = 90.0) -> list[str]:
        """Datagrams until one holds ``field`` (e.g. READY=1); fails with the service's output."""
        self.notify.settimeout(0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.messages += self.notify.recv(4096).decode().splitlines()
            except TimeoutError:
                if self.proc.poll() is not None:
                    break
                continue
            if field in self.messages:
                return self.messages
        self.proc.kill()
        pytest.fail(
            f"no {field} from the service; notify: {self.messages}; output:\n{self.proc.communicate()[0]}"
        )

    def curl(self, path: str, body: dict[str, object] | None = None) -> str:
        cmd = [
            "curl",
            "-sS",
            "--max-time",
            "60",
            "--unix-socket",
            str(self.socket),
            f"http://localhost{path}",
        ]
        if body is not None:
            cmd += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        out = self.proc.communicate(timeout=60)[0]
        self.notify.close()
        return self.proc.returncode, out


def _run_service_checks(box: Chroot) -> None:
    # The scripted engine (deterministic, no weights needed) on the fixture tokenizer, in a drop-in.
    box.copy_in(TINY_HF, "/var/lib/llm-tpu/models/tiny")
    box.run(["chown", "-R", "llm-tpu:llm-tpu", "/var/lib/llm-tpu/models/tiny"])
    box.path("/etc/llm-tpu/conf.d/50-test.yaml").write_text(
        "model:\n  engine: scripted\n  ref: /var/lib/llm-tpu/models/tiny\n"
    )
    assert "configuration is valid" in box.run(["llm-tpu", "config", "check"], capture_output=True).stdout

    service = Service(box)
    messages = service.wait_notify("READY=1")
    assert any(m.startswith("STATUS=ready") for m in messages), messages
    answer = json.loads(
        service.curl("/api/chat", {"messages": [{"role": "user", "content": "Hi"}], "stream": False})
    )
    assert "quick brown fox" in answer["message"]["content"], answer
    assert json.loads(service.curl("/health"))["status"] == "ok"
    status = box.run(["llm-tpu", "status"], capture_output=True)
    assert status.returncode == 0 and "status     ready" in status.stdout, status.stdout
    assert service.socket.stat().st_size == 0 and service.proc.pid  # a socket, served by the unit's user
    owner = box.run(["ps", "-o", "user=", "-p", str(service.proc.pid)], capture_output=True, check=False)
    if owner.returncode == 0:  # procps is not in minbase everywhere
        assert owner.stdout.strip() == "llm-tpu"
    code, out = service.stop()
    assert code == 0 and "Traceback" not in out, out

    # A missing model: the service stays up and says why (no crash loop).
    box.path("/etc/llm-tpu/conf.d/60-missing.yaml").write_text("model:\n  ref: no-such-model\n")
    service = Service(box)
    messages = service.wait_notify("READY=1")
    assert any(m.startswith("STATUS=error") and "no-such-model" in m for m in messages), messages
    status = box.run(["llm-tpu", "status"], capture_output=True, check=False)
    assert status.returncode == 3 and "no-such-model" in status.stdout, status.stdout
    code, out = service.stop()
    assert code == 0 and "Traceback" not in out, out
    box.path("/etc/llm-tpu/conf.d/60-missing.yaml").unlink()

    # A broken drop-in: one failure naming file, key and reason, with the exit code the unit does not restart.
    broken = "/etc/llm-tpu/conf.d/70-broken.yaml"
    box.path(broken).write_text("scheduler:\n  queue_size: many\n")
    prevent = _unit(box, "llm-tpu.service")["Service"]["RestartPreventExitStatus"].split()
    service = Service(box)
    code, out = service.proc.wait(timeout=60), service.proc.communicate()[0]
    service.notify.close()
    assert str(code) in prevent, (code, out)
    assert broken in out and "queue_size" in out and "Traceback" not in out, out
    box.path(broken).unlink()


def _verify_units(box: Chroot) -> None:
    """systemd-analyze verify on the installed units (the host's systemd; the chroot has none)."""
    added = []
    system = box.path("/usr/lib/systemd/system")
    for unit in Path("/usr/lib/systemd/system").iterdir():
        target = system / unit.name
        if not target.exists() and not target.is_symlink():
            if unit.is_dir():
                continue
            shutil.copy(unit, target, follow_symlinks=False)
            added.append(target)
    try:
        run = subprocess.run(
            ["systemd-analyze", "verify", f"--root={box.root}", *UNITS],
            capture_output=True,
            text=True,
            cwd=box.root,
            env={"PATH": SYSTEM_PATH},
        )
        assert run.returncode == 0 and run.stderr == "", run.stderr
    finally:
        for path in added:
            path.unlink()


def _upgrade_deb(deb: Path, out: Path) -> Path:
    """The same package with a higher version (dpkg-deb repack, fast gzip)."""
    tree = out / "tree"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    control = tree / "DEBIAN/control"
    version = re.search(r"^Version: (\S+)", control.read_text(), re.M).group(1)  # type: ignore[union-attr]
    new = f"{version}+upgrade1"
    control.write_text(control.read_text().replace(f"Version: {version}", f"Version: {new}"))
    target = out / f"{PACKAGE}_{new}_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "-Zgzip", "-z1", "-b", str(tree), str(target)], check=True, capture_output=True
    )
    shutil.rmtree(tree)
    return target


@pytest.fixture(params=["bullseye", "bookworm"])
def box(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Chroot]:
    chroot = Chroot.create(ChrootSpec(request.param, "amd64"), tmp_path / "root")
    try:
        with chroot:
            yield chroot
    finally:
        chroot.destroy()


def test_install_run_upgrade_remove_purge(box: Chroot, tmp_path: Path) -> None:
    deb = _deb()
    release = box.spec.release
    _install_repo(box, DIST / "repo")
    _apt(box, "update")
    # Dependencies first, so that the file list before shows what the package itself adds and
    # purge must take away (ca-certificates, for one, leaves generated files when purged itself).
    started = time.monotonic()
    depends = box.run(["apt-cache", "show", PACKAGE], capture_output=True).stdout
    _apt(box, "satisfy", re.search(r"^Depends: (.*)$", depends, re.M).group(1))  # type: ignore[union-attr]
    deps_s = time.monotonic() - started
    before = _files(box)
    started = time.monotonic()
    _apt(box, "install", PACKAGE)
    print(
        f"{release}: apt-get install: dependencies {deps_s:.1f} s, {PACKAGE} {time.monotonic() - started:.1f} s"
    )

    version = box.run(["llm-tpu", "version"], capture_output=True).stdout
    assert re.search(r"python\s+3\.11\.", version), version
    assert "Private LLM chat appliance" in box.run(["llm-tpu", "--help"], capture_output=True).stdout
    check = box.run(["llm-tpu", "config", "check"], capture_output=True)
    assert "/etc/llm-tpu/appliance.yaml" in check.stdout, check.stdout
    # No vendor SDK here: the status says so and what to do, even with no service running.
    status = box.run(["llm-tpu", "status"], capture_output=True, check=False)
    assert status.returncode != 0 and "Traceback" not in status.stderr, status.stderr
    assert "no TPU runtime found" in status.stdout and "next step" in status.stdout, status.stdout
    assert "install-host-engine" in status.stdout and "libsophon" in status.stdout, status.stdout
    # System user, group, state directory, udev rule, manual, units enabled the Debian way.
    assert box.run(["getent", "passwd", "llm-tpu"], capture_output=True).stdout.split(":")[6].strip() in (
        "/usr/sbin/nologin",
        "/bin/false",
    )
    assert box.run(["stat", "-c", "%U:%G %a", "/var/lib/llm-tpu"], capture_output=True).stdout.split() == [
        "llm-tpu:llm-tpu",
        "750",
    ]
    assert box.path("/etc/llm-tpu/conf.d").is_dir()
    rules = box.run(["dpkg", "-L", PACKAGE], capture_output=True).stdout
    assert re.search(r"/lib/udev/rules.d/\d+-llm-tpu-appliance.rules", rules)
    assert "/usr/share/man/man1/llm-tpu.1.gz" in rules
    assert box.path("/etc/systemd/system/multi-user.target.wants/llm-tpu.service").is_symlink()
    assert box.path("/etc/systemd/system/sockets.target.wants/llm-tpu.socket").is_symlink()

    _run_service_checks(box)
    _verify_units(box)

    # Upgrade: a modified conffile, a drop-in and the models stay, without a prompt.
    conffile = box.path("/etc/llm-tpu/appliance.yaml")
    conffile.write_text(conffile.read_text() + "\n# edited by the owner\n")
    box.path("/var/lib/llm-tpu/models/tiny/keep-me").write_text("x")
    newer = _upgrade_deb(deb, tmp_path)
    upgrade_repo = build_repo([deb, newer], tmp_path / "repo-upgrade", DIST / "repo-key")
    _install_repo(box, upgrade_repo)
    _apt(box, "update")
    _apt(box, "install", PACKAGE)
    installed = box.run(["dpkg-query", "-W", "-f=${Version}", PACKAGE], capture_output=True).stdout
    assert installed.endswith("+upgrade1"), installed
    assert conffile.read_text().endswith("# edited by the owner\n")
    assert box.path("/etc/llm-tpu/conf.d/50-test.yaml").exists()
    assert box.path("/var/lib/llm-tpu/models/tiny/keep-me").exists()
    postinst = box.path(f"/var/lib/dpkg/info/{PACKAGE}.postinst").read_text()
    assert "deb-systemd-invoke" in postinst and "restart" in postinst  # restart after the new files

    # Remove keeps configuration and models; purge leaves nothing.
    _apt(box, "remove", PACKAGE)
    assert box.run(
        ["dpkg-query", "-W", "-f=${db:Status-Abbrev}", PACKAGE], capture_output=True
    ).stdout.startswith("rc")
    assert conffile.exists() and box.path("/etc/llm-tpu/conf.d/50-test.yaml").exists()
    assert box.path("/var/lib/llm-tpu/models/tiny/keep-me").exists()
    assert not box.path("/opt/llm-tpu-appliance").exists() and not box.path("/usr/bin/llm-tpu").exists()
    _apt(box, "purge", PACKAGE)
    after = _files(box)
    assert not after - before, f"purge left: {sorted(after - before)[:40]}"
    # dpkg removes the empty /opt that debootstrap made and no package owns; nothing else may go.
    assert before - after <= {"/opt"}, f"purge took away: {sorted(before - after)[:40]}"


def test_unsigned_or_foreign_signed_repository_is_refused(tmp_path: Path) -> None:
    """apt checks the signature: the same repository signed by another key is refused."""
    deb = _deb()
    other = build_repo([deb], tmp_path / "repo", _other_key(tmp_path / "other-key"))
    shutil.copy(DIST / "repo/llm-tpu-appliance.gpg", other / "llm-tpu-appliance.gpg")  # the trusted key
    chroot = Chroot.create(ChrootSpec("bookworm", "amd64"), tmp_path / "root")
    try:
        with chroot:
            _install_repo(chroot, other)
            update = chroot.run(["apt-get", "update"], capture_output=True, check=False)
            assert "NO_PUBKEY" in update.stderr or "not signed" in update.stderr, update.stderr
            install = chroot.run(["apt-get", "install", "-y", PACKAGE], capture_output=True, check=False)
            assert install.returncode != 0
    finally:
        chroot.destroy()


def _other_key(home: Path) -> Path:
    from make_repo import test_key

    return test_key(home)
