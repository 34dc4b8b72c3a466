"""Build a signed apt repository (pool/ + dists/) from .deb files: `make repo`.

    python3 scripts/make_repo.py [--arch ARCH]... DEB_DIR OUT_DIR

Takes every llm-tpu-appliance_*.deb in DEB_DIR (amd64 and arm64: `make repo`), or only those of the
architectures named with --arch (the package test's amd64-only repository).

Layout: OUT/pool/main/*.deb, OUT/dists/stable/main/binary-<arch>/Packages(.gz), Release signed as
InRelease and Release.gpg (apt-ftparchive, gpg), the public key as OUT/llm-tpu-appliance.gpg (binary,
for `signed-by=`) and .asc, and OUT/README.txt with the two lines that add the repository.

Signing key: the keyring in $LLM_TPU_REPO_GNUPGHOME (its first secret key) when set, the real
release key; otherwise a throwaway test key made once in DEB_DIR/repo-key (never committed: dist/ is
ignored by git). Stdlib only; needs apt-utils (apt-ftparchive) and gnupg.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SUITE = "stable"
COMPONENT = "main"
KEY_NAME = "llm-tpu-appliance.gpg"
README = """\
# Add the llm-tpu-appliance repository ({arches}; served from {url}); then: sudo apt update && sudo apt install llm-tpu-appliance
sudo curl -fsSLo /usr/share/keyrings/{key} {url}/{key}
echo "deb [signed-by=/usr/share/keyrings/{key}] {url} {suite} {component}" | sudo tee /etc/apt/sources.list.d/llm-tpu-appliance.list
"""

__all__ = ["build_repo", "gpg_agent_stopped_after", "test_key"]


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8", **kwargs.pop("env", {})}  # type: ignore[dict-item]
    return subprocess.run(cmd, text=True, check=True, env=env, **kwargs)  # type: ignore[call-overload, no-any-return]


@contextlib.contextmanager
def gpg_agent_stopped_after(gnupghome: Path) -> Iterator[None]:
    """gpg starts a gpg-agent for ``gnupghome`` on first use and leaves it running: stop it afterwards,
    unless one was already running before (someone else's, e.g. a release manager's agent)."""
    env = {"GNUPGHOME": str(gnupghome)}
    probe = ["gpg-connect-agent", "--no-autostart", "GETINFO pid", "/bye"]
    answer = subprocess.run(probe, env={"PATH": SYSTEM_PATH, **env}, capture_output=True, text=True).stdout
    running_before = answer.startswith("D ")  # the agent's pid; it exits 0 with no agent too
    try:
        yield
    finally:
        if not running_before:
            subprocess.run(
                ["gpgconf", "--homedir", str(gnupghome), "--kill", "all"],
                env={"PATH": SYSTEM_PATH},
                capture_output=True,
            )


def test_key(gnupghome: Path) -> Path:
    """A throwaway signing key (ed25519, no passphrase) in ``gnupghome``, made once."""
    gnupghome.mkdir(mode=0o700, parents=True, exist_ok=True)
    with gpg_agent_stopped_after(gnupghome):
        return _make_key(gnupghome)


def _make_key(gnupghome: Path) -> Path:
    env = {"GNUPGHOME": str(gnupghome)}
    listed = _run(["gpg", "--batch", "--list-secret-keys"], env=env, capture_output=True).stdout
    if "sec" not in listed:
        _run(
            [
                "gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "",
                "--quick-gen-key", "llm-tpu-appliance test repository (throwaway)", "ed25519", "sign", "1y",
            ],
            env=env,
        )  # fmt: skip
    return gnupghome


def build_repo(debs: list[Path], out: Path, gnupghome: Path) -> Path:
    """Write a signed repository of ``debs`` to ``out`` (replacing it); returns ``out``."""
    if not debs:
        raise SystemExit("make_repo: no .deb files given")
    if out.exists():
        shutil.rmtree(out)
    pool = out / "pool" / COMPONENT
    pool.mkdir(parents=True)
    arches = set()
    for deb in debs:
        shutil.copy2(deb, pool / deb.name)
        arch = _run(["dpkg-deb", "-f", str(deb), "Architecture"], capture_output=True).stdout.strip()
        arches.update(["amd64", "arm64"] if arch == "all" else [arch])
    dist = out / "dists" / SUITE
    for arch in sorted(arches):
        binary = dist / COMPONENT / f"binary-{arch}"
        binary.mkdir(parents=True)
        packages = _run(
            ["apt-ftparchive", "--arch", arch, "packages", f"pool/{COMPONENT}"], cwd=out, capture_output=True
        ).stdout
        (binary / "Packages").write_text(packages)
        with gzip.open(binary / "Packages.gz", "wt") as handle:
            handle.write(packages)
    release = _run(
        [
            "apt-ftparchive",
            "-o", "APT::FTPArchive::Release::Origin=llm-tpu-appliance",
            "-o", "APT::FTPArchive::Release::Label=llm-tpu-appliance",
            "-o", f"APT::FTPArchive::Release::Suite={SUITE}",
            "-o", f"APT::FTPArchive::Release::Codename={SUITE}",
            "-o", f"APT::FTPArchive::Release::Architectures={' '.join(sorted(arches))}",
            "-o", f"APT::FTPArchive::Release::Components={COMPONENT}",
            "release", ".",
        ],
        cwd=dist,
        capture_output=True,
    ).stdout  # fmt: skip
    (dist / "Release").write_text(release)
    env = {"GNUPGHOME": str(gnupghome)}
    gpg = ["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", ""]
    with gpg_agent_stopped_after(gnupghome):
        _run([*gpg, "--clearsign", "-o", str(dist / "InRelease"), str(dist / "Release")], env=env)
        _run(
            [*gpg, "--armor", "--detach-sign", "-o", str(dist / "Release.gpg"), str(dist / "Release")],
            env=env,
        )
        _run([*gpg, "--export", "-o", str(out / KEY_NAME)], env=env)
        _run([*gpg, "--armor", "--export", "-o", str(out / (KEY_NAME[:-4] + ".asc"))], env=env)
    url = os.environ.get("LLM_TPU_REPO_URL", "https://REPOSITORY-URL")
    readme = README.format(
        url=url, key=KEY_NAME, suite=SUITE, component=COMPONENT, arches=" and ".join(sorted(arches))
    )
    (out / "README.txt").write_text(readme)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--arch", action="append", help="only the packages of this architecture (repeatable)")
    parser.add_argument("deb_dir", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    home = os.environ.get("LLM_TPU_REPO_GNUPGHOME")
    gnupghome = Path(home) if home else test_key(args.deb_dir / "repo-key")
    debs = sorted(args.deb_dir.glob("llm-tpu-appliance_*.deb"))
    if args.arch:
        debs = [deb for deb in debs if deb.name.rsplit("_", 1)[-1].removesuffix(".deb") in args.arch]
    build_repo(debs, args.out, gnupghome)
    print(f"make_repo: {args.out} ({', '.join(d.name for d in debs)}), signed; see {args.out / 'README.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
