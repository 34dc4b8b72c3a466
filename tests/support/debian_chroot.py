"""Debian chroots for package builds and tests: cached minbase trees, safe mounts, commands inside.

The public API (kept stable: the Debian package tests, `make deb` and the Ansible fleet tests use it)::

    spec = ChrootSpec("bullseye", "amd64", packages=("curl",))   # release, arch, extra packages
    tarball = ensure_tarball(spec)        # debootstrap --variant=minbase (+ apt-get install), cached
    with Chroot.create(spec, dest) as box:   # unpack the cached tarball into dest, mount, ... unmount
        box.run(["apt-get", "install", "-y", "x"])   # env -i: nothing of the caller's env leaks in
        box.run("echo hi | cat", user="nobody")      # a str runs under /bin/sh -c
        box.copy_in(Path("x.deb"), "/tmp/x.deb")
        box.copy_ca_bundle()              # the host's CA bundle (TLS is intercepted here), for pip/curl
        box.bind(Path("/var/cache/x"), "/cache")     # a host directory inside (unmounted on exit)
    Chroot.create(..., mount=False)       # no mounts: box.mount() / box.unmount() by hand
    box.destroy()                         # unmount whatever is still mounted, then delete the tree

Tarballs live under $LLM_TPU_BUILD_CACHE (default /var/cache/llm-tpu-build)/chroots, keyed on the
release, architecture, variant, mirror, package list and this recipe's version: a second run unpacks in
seconds instead of bootstrapping for a minute. Foreign architectures (arm64 on x86) bootstrap with
``--foreign`` and finish under qemu-user-static; :func:`qemu_binfmt` registers the interpreter for the
duration of a ``with`` block and restores the kernel's binfmt table afterwards.

Mounts are /proc, a private /dev (tmpfs with the usual nodes, devpts, shm: never a bind of the host's
/dev, so deleting a tree cannot touch host device nodes) and /run as tmpfs; :meth:`Chroot.destroy`
refuses to delete a tree that still has anything mounted below it.

Run as root (debootstrap, chroot, mount). Usable as a script too (stdlib only)::

    python3 tests/support/debian_chroot.py tarball bullseye amd64 [PKG...]   # prints the tarball path
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CACHE_ROOT",
    "HOST_CA_BUNDLE",
    "Chroot",
    "ChrootSpec",
    "cache_lock",
    "ensure_tarball",
    "host_arch",
    "qemu_binfmt",
]

CACHE_ROOT = Path(os.environ.get("LLM_TPU_BUILD_CACHE", "/var/cache/llm-tpu-build"))
MIRROR = os.environ.get("LLM_TPU_DEBIAN_MIRROR", "http://deb.debian.org/debian")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Bump when the way tarballs are made changes, so that old ones are not reused.
RECIPE_VERSION = "1"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
QEMU_ARCH = {"arm64": "aarch64", "armhf": "arm", "amd64": "x86_64"}
_DEV_NODES = {
    "null": (1, 3),
    "zero": (1, 5),
    "full": (1, 7),
    "random": (1, 8),
    "urandom": (1, 9),
    "tty": (5, 0),
}


def host_arch() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


@dataclass(frozen=True)
class ChrootSpec:
    """A Debian release for one architecture, minbase plus ``packages`` (installed with apt-get)."""

    release: str
    arch: str = field(default_factory=host_arch)
    packages: tuple[str, ...] = ()
    variant: str = "minbase"
    mirror: str = MIRROR
    # More architectures for dpkg (multiarch), before ``packages`` are installed: ``name:arm64``.
    foreign_archs: tuple[str, ...] = ()

    @property
    def foreign(self) -> bool:
        return self.arch != host_arch()

    def key(self) -> str:
        recipe = "\n".join(
            [RECIPE_VERSION, self.release, self.arch, self.variant, self.mirror, *sorted(self.packages)]
        )
        if self.foreign_archs:  # (keeps the keys of existing tarballs)
            recipe += "\nforeign:" + ",".join(sorted(self.foreign_archs))
        digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
        return f"{self.release}-{self.arch}-{self.variant}-{digest}"

    def base(self) -> ChrootSpec:
        return ChrootSpec(self.release, self.arch, (), self.variant, self.mirror)


@contextlib.contextmanager
def cache_lock(name: str) -> Iterator[None]:
    """An exclusive lock under the cache root, so that two builds never make the same artifact at once."""
    locks = CACHE_ROOT / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _log(message: str) -> None:
    print(f"debian_chroot: {message}", file=sys.stderr, flush=True)


def _sh(cmd: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(list(cmd), env=env, text=True, check=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def ensure_tarball(spec: ChrootSpec) -> Path:
    """The cached tarball of ``spec``, made now when missing (atomically, under a lock)."""
    out = CACHE_ROOT / "chroots" / f"{spec.key()}.tar.gz"
    if out.exists():
        return out
    with cache_lock(spec.key()):
        if out.exists():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"chroot-{spec.key()}-", dir=out.parent))
        box = Chroot(work / "root", spec)
        try:
            if spec.packages:
                base = ensure_tarball(spec.base())
                box.root.mkdir()
                _sh(["tar", "--numeric-owner", "-xzf", str(base), "-C", str(box.root)])
                emulated = qemu_binfmt(spec.arch) if spec.foreign else contextlib.nullcontext()
                with emulated, box:
                    for arch in spec.foreign_archs:
                        box.run(["dpkg", "--add-architecture", arch])
                    box.run(["apt-get", "update", "-qq"])
                    box.run(
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *spec.packages],
                        stdout=subprocess.DEVNULL,
                    )
                    box.run(["apt-get", "clean"])
            else:
                _debootstrap(spec, box.root)
            tmp = out.with_suffix(".tmp")
            _sh(["tar", "--numeric-owner", "-czf", str(tmp), "-C", str(box.root), "."])
            tmp.rename(out)
        finally:
            box.destroy()
            shutil.rmtree(work, ignore_errors=True)
    return out


def _debootstrap(spec: ChrootSpec, root: Path) -> None:
    _log(f"debootstrap {spec.variant} {spec.release} {spec.arch} (cached afterwards)")
    args = ["debootstrap", f"--variant={spec.variant}", f"--arch={spec.arch}"]
    if spec.foreign:
        args.append("--foreign")
    _sh([*args, spec.release, str(root), spec.mirror], stdout=subprocess.DEVNULL)
    if spec.foreign:
        with qemu_binfmt(spec.arch):
            _sh(
                ["chroot", str(root), "/debootstrap/debootstrap", "--second-stage"], stdout=subprocess.DEVNULL
            )
    # The downloaded .debs are not part of the system.
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    # Keep apt lean: no recommends, no translations; dpkg without fsync (a throwaway tree).
    (root / "etc/apt/apt.conf.d/90llm-tpu-test").write_text(
        'APT::Install-Recommends "false";\nAcquire::Languages "none";\n'
    )
    (root / "etc/dpkg/dpkg.cfg.d/90llm-tpu-test").write_text("force-unsafe-io\n")


class Chroot:
    """A chroot tree; a context manager that mounts on enter and unmounts on exit."""

    def __init__(self, root: Path, spec: ChrootSpec, *, mount: bool = True) -> None:
        self.root = root
        self.spec = spec
        self._auto_mount = mount
        self._mounted: list[Path] = []
        self._base_mounted = False

    @classmethod
    def create(cls, spec: ChrootSpec, dest: Path, *, mount: bool = True) -> Chroot:
        """Unpack the cached tarball of ``spec`` into the empty or missing directory ``dest``."""
        tarball = ensure_tarball(spec)
        dest.mkdir(parents=True, exist_ok=True)
        if any(dest.iterdir()):
            raise FileExistsError(f"{dest} is not empty")
        _sh(["tar", "--numeric-owner", "-xzf", str(tarball), "-C", str(dest)])
        return cls(dest, spec, mount=mount)

    # -- mounts ----------------------------------------------------------------------------------
    def __enter__(self) -> Chroot:
        if self._auto_mount:
            self.mount()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmount()

    def _mount(self, target: str, *args: str) -> None:
        path = self.root / target.lstrip("/")
        path.mkdir(parents=True, exist_ok=True)
        _sh(["mount", *args, str(path)])
        self._mounted.append(path)

    def mount(self) -> None:
        """Mount /proc, a private /dev (tmpfs + nodes + devpts + shm) and /run (tmpfs)."""
        if self._base_mounted:
            return
        self._base_mounted = True
        try:
            self._mount("/proc", "-t", "proc", "proc")
            self._mount("/dev", "-t", "tmpfs", "-o", "mode=0755,nosuid", "devtmp")
            dev = self.root / "dev"
            for name, (major, minor) in _DEV_NODES.items():
                os.mknod(dev / name, 0o666 | 0o020000, os.makedev(major, minor))
                os.chmod(dev / name, 0o666)
            self._mount("/dev/pts", "-t", "devpts", "-o", "newinstance,ptmxmode=0666", "devpts")
            os.symlink("pts/ptmx", dev / "ptmx")
            self._mount("/dev/shm", "-t", "tmpfs", "-o", "mode=1777", "shm")
            for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                                 ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
                os.symlink(target, dev / name)
            self._mount("/run", "-t", "tmpfs", "-o", "mode=0755,nosuid", "run")
            (self.root / "run/lock").mkdir(mode=0o1777)
        except BaseException:
            self.unmount()
            raise

    def unmount(self) -> None:
        """Unmount everything this object mounted, innermost first (lazily if something is busy)."""
        for path in reversed(self._mounted):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(path)], capture_output=True)
        self._mounted.clear()
        self._base_mounted = False

    def mounts_below(self) -> list[str]:
        """Mount points at or below the tree, from /proc/self/mountinfo."""
        root = str(self.root.resolve())
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == root or point.startswith(root + "/"):
                points.append(point)
        return points

    def destroy(self) -> None:
        """Unmount, then delete the tree; refuses while anything is still mounted below it."""
        self.unmount()
        if not self.root.exists():
            return
        left = self.mounts_below()
        if left:
            raise RuntimeError(f"not deleting {self.root}: still mounted: {left}")
        _sh(["rm", "-rf", "--one-file-system", str(self.root)])

    # -- commands --------------------------------------------------------------------------------
    def run(
        self,
        cmd: Sequence[str] | str,
        *,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        check: bool = True,
        timeout: float | None = None,
        **kwargs: object,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the chroot with a clean environment (``env -i`` plus ``env``).

        A str runs through /bin/sh -c. ``user`` runs it as that user (setpriv, util-linux). Extra
        keyword arguments go to :func:`subprocess.run` (capture_output, input, stdout, ...).
        """
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        base = {
            "PATH": SYSTEM_PATH,
            "HOME": "/root",
            "LC_ALL": "C.UTF-8",
            "DEBIAN_FRONTEND": "noninteractive",
            "PIP_CONFIG_FILE": "/dev/null",
        }
        if user is not None:
            base["HOME"] = "/"
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *argv]
        full = {**base, **(env or {})}
        envargs = [f"{k}={v}" for k, v in full.items()]
        return subprocess.run(  # type: ignore[call-overload, no-any-return]
            ["chroot", str(self.root), "/usr/bin/env", "-i", *envargs, *argv],
            env={"PATH": SYSTEM_PATH},
            text=True,
            check=check,
            timeout=timeout,
            **kwargs,
        )

    def bind(self, src: Path, inside: str, *, readonly: bool = False) -> Path:
        """Bind-mount the host directory ``src`` at ``inside``; unmounted with the rest."""
        self._mount(inside, "--bind", str(src))
        target = self.path(inside)
        if readonly:
            _sh(["mount", "-o", "remount,bind,ro", str(target)])
        return target

    def path(self, inside: str) -> Path:
        """The host path of ``inside`` (an absolute path in the chroot)."""
        return self.root / inside.lstrip("/")

    def copy_in(self, src: Path, inside: str) -> Path:
        dest = self.path(inside)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dest)
        return dest

    def copy_ca_bundle(self, inside: str = "/etc/ssl/certs/ca-certificates.crt") -> str:
        """Copy the host's CA bundle in (this environment intercepts TLS); returns its chroot path.

        Point pip at it with PIP_CERT, curl with CURL_CA_BUNDLE, Python with SSL_CERT_FILE.
        """
        self.copy_in(HOST_CA_BUNDLE, inside)
        return inside


_BINFMT_USERS: dict[str, int] = {}


@contextlib.contextmanager
def qemu_binfmt(arch: str) -> Iterator[None]:
    """Register qemu-user-static for ``arch`` for the duration; restore the binfmt table afterwards.

    Shared between processes (a build and a test may overlap): each user holds a shared lock while it
    runs; the last one out undoes what the first one in changed (recorded in a marker file), and a
    registration that was there before any of them is left alone.
    """
    if _BINFMT_USERS.get(arch):  # nested in this process: the outer block holds the registration
        _BINFMT_USERS[arch] += 1
        try:
            yield
        finally:
            _BINFMT_USERS[arch] -= 1
        return
    name = f"qemu-{QEMU_ARCH[arch]}"
    if not (Path(f"/usr/bin/{name}-static").exists() and shutil.which("update-binfmts", path=SYSTEM_PATH)):
        _log("installing qemu-user-static and binfmt-support (Debian packages)")
        _sh(
            [
                "apt-get",
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "qemu-user-static",
                "binfmt-support",
            ]
        )
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    locks = CACHE_ROOT / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    marker = locks / f"binfmt-{arch}.changed"
    # setup: held briefly while the table is changed; users: held shared while emulation is in use.
    with (
        open(locks / f"binfmt-{arch}.setup.lock", "w") as setup,
        open(locks / f"binfmt-{arch}.users.lock", "w") as users,
    ):
        fcntl.flock(setup, fcntl.LOCK_EX)
        changed = set(marker.read_text().split()) if marker.exists() else set()
        if not (binfmt / "register").exists():
            _sh(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)])
            changed.add("mounted")
        entry = binfmt / name
        if not (entry.exists() and entry.read_text().startswith("enabled")):
            _sh(["update-binfmts", "--enable", name])
            changed.add("enabled")
        marker.write_text(" ".join(sorted(changed)))
        fcntl.flock(users, fcntl.LOCK_SH)
        fcntl.flock(setup, fcntl.LOCK_UN)
        _BINFMT_USERS[arch] = 1
        try:
            yield
        finally:
            _BINFMT_USERS[arch] = 0
            fcntl.flock(setup, fcntl.LOCK_EX)
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another user still runs: the last one out restores
            changed = set(marker.read_text().split()) if marker.exists() else set()
            if "enabled" in changed:
                subprocess.run(["update-binfmts", "--disable", name], capture_output=True)
            if "mounted" in changed:
                subprocess.run(["umount", str(binfmt)], capture_output=True)
            marker.unlink(missing_ok=True)


def main(argv: Sequence[str]) -> int:
    if len(argv) >= 3 and argv[0] == "tarball":
        print(ensure_tarball(ChrootSpec(argv[1], argv[2], tuple(argv[3:]))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
