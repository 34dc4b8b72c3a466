"""Build the llm-tpu-appliance .deb (`make deb`, `make deb-arm64`): dpkg-buildpackage inside a Debian 11 chroot.

    python3 scripts/build_deb.py [--arch amd64|arm64] [--out dist]

Steps: download the python3.11 and openssl sources from Debian's archive (a scratch apt configuration,
nothing of the host's apt state changes), unpack the cached Debian 11 build chroot (minbase plus the
Build-Depends of debian/control), copy the working tree in (tracked and untracked, not ignored, files),
run `dpkg-buildpackage -b` there with a clean environment, copy the .deb out, run lintian on the host.
The build chroot, the built interpreter and pip's downloads are cached under $LLM_TPU_BUILD_CACHE
(default /var/cache/llm-tpu-build), keyed on their inputs.

arm64 (on an amd64 machine): OpenSSL and CPython are cross-compiled first in an amd64 Debian 11
chroot (crossbuild-essential-arm64 and the arm64 multiarch -dev packages, glibc 2.31; the amd64 build
of the same interpreter is the build Python), cached like the native build. Then dpkg-buildpackage
runs natively in an arm64 Debian 11 chroot under qemu-user-static: only the fast steps run emulated
(bundling the libraries, pip installing the pinned aarch64 wheels, packaging), and dh_shlibdeps
reads the arm64 libc6 it links against. binfmt is registered for the build only, restored afterwards.
Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.debian_chroot import (  # noqa: E402
    CACHE_ROOT,
    SYSTEM_PATH,
    Chroot,
    ChrootSpec,
    cache_lock,
    host_arch,
    qemu_binfmt,
)

BUILD_RELEASE = "bullseye"
# Debian 12's sources: python3.11 3.11.2 with its security backports, OpenSSL 3.0 (LTS).
SOURCE_SUITES = ("bookworm", "bookworm-updates")
SECURITY_SUITE = "bookworm-security"
SOURCE_PACKAGES = ("python3.11", "openssl")
SOURCE_FILES = {"python3.11": (".orig.tar.gz", ".debian.tar.xz"), "openssl": (".orig.tar.gz",)}
CA_INSIDE = "/etc/ssl/llm-tpu-build-ca.crt"


def log(message: str) -> None:
    print(f"build-deb: {message}", file=sys.stderr, flush=True)


def build_depends() -> tuple[str, ...]:
    """Package names of Build-Depends in debian/control (versions dropped), plus the dpkg tools."""
    text = (REPO / "debian/control").read_text()
    field = re.search(r"^Build-Depends:(.*?)^\S", text, re.S | re.M)
    assert field, "debian/control has no Build-Depends"
    names = {re.split(r"[\s(\[]", dep.strip())[0] for dep in field.group(1).split(",") if dep.strip()}
    names = {"debhelper" if n == "debhelper-compat" else n for n in names}
    return tuple(sorted(names | {"dpkg-dev", "fakeroot"}))


def _apt(args: list[str], state: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    opts = [
        f"-oDir::Etc::SourceList={state / 'sources.list'}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={state / 'lists'}",
        f"-oDir::Cache={state / 'cache'}",
        "-oAPT::Sandbox::User=root",
    ]
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [args[0], *opts, *args[1:]], env={"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8"}, text=True, **kwargs
    )


def fetch_sources(dest: Path) -> dict[str, str]:
    """Debian's python3.11 and openssl sources into ``dest``; returns {package: version}.

    The newest version that the archive actually serves wins (an index can list a security upload
    whose files the mirror does not have yet). Downloads are kept under the cache.
    """
    state = CACHE_ROOT / "apt-src"
    store = CACHE_ROOT / "sources"
    with cache_lock("apt-src"):
        (state / "lists/partial").mkdir(parents=True, exist_ok=True)
        mirror = "http://deb.debian.org"
        lines = [f"deb-src {mirror}/debian {s} main" for s in SOURCE_SUITES]
        lines.append(f"deb-src {mirror}/debian-security {SECURITY_SUITE} main")
        (state / "sources.list").write_text("\n".join(lines) + "\n")
        _apt(["apt-get", "update", "-qq"], state, check=True)
        chosen = {}
        for package in SOURCE_PACKAGES:
            shown = _apt(["apt-cache", "showsrc", package], state, capture_output=True, check=True).stdout
            versions = sorted(set(re.findall(r"^Version: (\S+)", shown, re.M)), key=_DebVersion, reverse=True)
            for version in versions:
                where = store / f"{package}_{version}"
                if not (where / ".complete").exists():
                    where.mkdir(parents=True, exist_ok=True)
                    got = _apt(
                        ["apt-get", "source", "--download-only", "-qq", f"{package}={version}"],
                        state,
                        cwd=where,
                        capture_output=True,
                    )
                    if got.returncode != 0:
                        log(f"{package} {version} is not downloadable here, trying an older one")
                        shutil.rmtree(where)
                        continue
                    (where / ".complete").touch()
                chosen[package] = version
                for suffix in SOURCE_FILES[package]:
                    (match,) = [p for p in where.iterdir() if p.name.endswith(suffix)]
                    shutil.copy2(match, dest / match.name)
                break
            else:
                raise SystemExit(f"build-deb: no downloadable source of {package} in {lines}")
    return chosen


class _DebVersion:
    """Sort key comparing Debian versions with dpkg itself."""

    def __init__(self, version: str) -> None:
        self.version = version

    def __lt__(self, other: _DebVersion) -> bool:
        return (
            subprocess.run(["dpkg", "--compare-versions", self.version, "lt", other.version]).returncode == 0
        )


def cross_compile_interpreter(arch: str, sources: Path, work: Path) -> None:
    """Cross-compile the bundled interpreter for ``arch`` into the cache, unless it is there already.

    In an amd64 Debian 11 chroot: the amd64 interpreter (cached, or built now) becomes the build
    Python, then build-python.sh --cross compiles OpenSSL and CPython with the ``arch`` cross
    toolchain against that architecture's multiarch libraries (same glibc 2.31).
    """
    script = REPO / "debian/runtime/build-python.sh"
    cached = [str(script), "--cached", arch, str(sources), str(CACHE_ROOT)]
    if subprocess.run(cached, env={"PATH": SYSTEM_PATH}).returncode == 0:
        log(f"{arch} interpreter: cached")
        return
    started = time.monotonic()
    dev = [name for name in build_depends() if name.endswith("-dev")]
    spec = ChrootSpec(
        BUILD_RELEASE,
        host_arch(),
        (*build_depends(), f"crossbuild-essential-{arch}", *(f"{name}:{arch}" for name in dev)),
        foreign_archs=(arch,),
    )
    box = Chroot.create(spec, work / "cross-root")
    try:
        with box:
            box.copy_in(sources, "/build/sources")
            box.copy_in(script, "/build/build-python.sh")
            CACHE_ROOT.mkdir(parents=True, exist_ok=True)
            box.bind(CACHE_ROOT, "/cache")
            # The build Python only runs the build's own scripts (setup.py, freezing, compileall):
            # any amd64 build of this interpreter (3.11) will do, the newest cached one first.
            box.run(
                "set -e; mkdir /opt/build-python"
                f"; built=$(ls -t /cache/python/python-{host_arch()}-*.tar.gz 2>/dev/null | head -1)"
                '; if [ -n "$built" ]; then tar -xzf "$built" -C /opt/build-python'
                "; else /build/build-python.sh /build/sources /cache"
                " && rmdir /opt/build-python && mv /opt/llm-tpu-appliance/python /opt/build-python; fi"
                "; /opt/build-python/bin/python3.11 -c 'import sys; assert sys.version_info[:2] == (3, 11)'"
                f"; /build/build-python.sh --cross {arch} /build/sources /cache /opt/build-python/bin/python3.11"
            )
    finally:
        box.destroy()
    log(f"{arch} interpreter cross-compiled in {time.monotonic() - started:.0f} s")


def tree_files() -> list[str]:
    """The working tree as git sees it: tracked and untracked files, nothing ignored (no .venv, .cache)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    return [f for f in out.decode().split("\0") if f and (REPO / f).exists()]


def build(arch: str, out: Path) -> Path:
    started = time.monotonic()
    spec = ChrootSpec(BUILD_RELEASE, arch, build_depends())
    foreign = arch != host_arch()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llm-tpu-deb-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        sources = work / "sources"
        sources.mkdir()
        versions = fetch_sources(sources)
        log(f"sources: {versions}")
        if foreign:
            cross_compile_interpreter(arch, sources, work)
        binfmt = qemu_binfmt(arch) if foreign else contextlib.nullcontext()
        with binfmt:
            box = Chroot.create(spec, work / "root")
            log(f"build chroot ready after {time.monotonic() - started:.0f} s")
            try:
                with box:
                    box.copy_ca_bundle(CA_INSIDE)
                    box.copy_in(sources, "/build/sources")
                    src = box.path("/build/llm-tpu-appliance")
                    for name in tree_files():
                        (src / name).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(REPO / name, src / name, follow_symlinks=False)
                    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
                    box.bind(CACHE_ROOT, "/cache")
                    box.run(
                        "cd /build/llm-tpu-appliance && dpkg-buildpackage -b -us -uc",
                        env={
                            "LLM_TPU_SOURCES": "/build/sources",
                            "LLM_TPU_BUILD_CACHE": "/cache",
                            "LLM_TPU_XZ_LEVEL": os.environ.get("LLM_TPU_XZ_LEVEL", "1"),
                        },
                    )
                debs = sorted(box.path("/build").glob("llm-tpu-appliance_*.deb"))
                if not debs:
                    raise SystemExit("build-deb: dpkg-buildpackage made no .deb")
                for deb in debs:
                    shutil.copy2(deb, out / deb.name)
            finally:
                box.destroy()
    deb = out / debs[-1].name
    log(f"built {deb} ({deb.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - started:.0f} s")
    return deb


def lint(deb: Path) -> None:
    subprocess.run(
        ["lintian", "--fail-on", "warning", "--no-tag-display-limit", "--info", str(deb)],
        check=True,
        env={"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8"},
    )
    log("lintian: clean at --fail-on warning")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--arch", default=host_arch(), help="amd64 or arm64 (default: this machine's)")
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="where the .deb goes (default dist/)")
    parser.add_argument("--no-lintian", action="store_true", help="skip lintian")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit(
            "build-deb: needs root (debootstrap, chroot, mount): run it as root, e.g. sudo make deb"
        )
    deb = build(args.arch, args.out)
    if not args.no_lintian:
        lint(deb)
    print(deb)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
