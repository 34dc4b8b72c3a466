"""Run the vendor's ``memory_edit.sh`` (sophon-tools) and read what it prints.

The facts we rely on (sophgo-facts.md section 7): ``-p`` prints the board's per-heap maxima and current
sizes as ``Info: (max|now) <heap> size: 0x... [N MiB]`` plus DDR sizes and the dts file in use;
``-c -npu N -vpu N -vpp N`` (decimal MiB) writes a new boot image into the script's own directory and
prints ``Info: check edit size ok`` and ``sudo cp <dir>/<itb> /boot/<itb> && sync``; errors start with
``Error:``. The script works on copies in its own directory, so we always run it from a private copy:
``-p`` in a throw-away temp dir (reading the layout must write nothing we keep), ``-c`` in the
provisioning work dir.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from appliance.atomic import sha256_file
from appliance.config.provisioning import ProvisioningSettings
from appliance.errors import ProvisioningError
from provisioning.download import download_file
from provisioning.layout import HeapLimits, MemoryLayout

__all__ = [
    "EditResult",
    "MemoryEditReport",
    "locate_memory_edit",
    "parse_edit_output",
    "parse_print_output",
    "run_configure",
    "run_print",
]

# Where memory_edit.sh is commonly unpacked on SE7/SM7 boxes (vendor docs and our own kit dir).
KNOWN_MEMORY_EDIT_PATHS: tuple[str, ...] = (
    "/var/lib/llm-tpu/provision/kit/memory_edit/memory_edit.sh",
    "/opt/sophon/memory_edit/memory_edit.sh",
    "/data/memory_edit/memory_edit.sh",
    "/data/.memEdit/memory_edit/memory_edit.sh",
    "/root/memory_edit/memory_edit.sh",
    "/home/linaro/memory_edit/memory_edit.sh",
)

SCRIPT_NAME = "memory_edit.sh"
_SIZE = re.compile(r"^Info: (max|now) (npu|vpu|vpp|npu\+vpp) size: (0x[0-9a-fA-F]+) \[(\d+) MiB\]\s*$")
_DDR = re.compile(r"^Info: (ddr\d+_size) (\d+) Byte \[(\d+) MiB\]\s*$")
_DDR_TOTAL = re.compile(r"^Info: ddr_size (\d+) MiB\s*$")
_DTS = re.compile(r"^Info: use dts file (\S+)\s*$")
_VERSION = re.compile(r"^INFO: version: (\S+)\s*$")
_COPY = re.compile(r"^sudo cp (\S+) (/boot/\S+?)(?: && sync)?\s*$")
_CHECK = re.compile(r"^Info: check (npu|vpu|vpp) size: (0x[0-9a-fA-F]+) \[(\d+) MiB\]\s*$")


@dataclass(frozen=True)
class MemoryEditReport:
    """What ``memory_edit.sh -p`` told us, in MiB."""

    limits: HeapLimits
    current: MemoryLayout
    ddr_mib: dict[str, int] = field(default_factory=dict)
    dts_file: str | None = None
    version: str | None = None

    @property
    def dts_name(self) -> str | None:
        return Path(self.dts_file).name if self.dts_file else None


@dataclass(frozen=True)
class EditResult:
    """What ``memory_edit.sh -c`` produced: the new image, where the vendor says it goes, its log."""

    image: Path
    install_path: str
    checked: MemoryLayout
    log: str


def _errors(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("Error:")]


def parse_print_output(text: str) -> MemoryEditReport:
    maxima: dict[str, int] = {}
    now: dict[str, int] = {}
    ddr: dict[str, int] = {}
    dts = version = None
    for line in text.splitlines():
        line = line.rstrip()
        if m := _SIZE.match(line):
            (maxima if m[1] == "max" else now)[m[2]] = int(m[4])
        elif m := _DDR.match(line):
            ddr[m[1]] = int(m[3])
        elif m := _DDR_TOTAL.match(line):
            ddr["ddr_size"] = int(m[1])
        elif m := _DTS.match(line):
            dts = m[1]
        elif m := _VERSION.match(line):
            version = m[1]
    missing = [f"max {h}" for h in ("npu", "vpu", "vpp") if h not in maxima]
    missing += [f"now {h}" for h in ("npu", "vpu", "vpp") if h not in now]
    if missing:
        errors = _errors(text)
        detail = "; ".join(errors) if errors else f"no '{', '.join(missing)}' lines"
        raise ProvisioningError(
            f"memory_edit.sh -p did not report the board's heaps: {detail}",
            hint="run it by hand (memory_edit.sh -p) and check that it supports this board (BM1684X SoC)",
        )
    return MemoryEditReport(
        limits=HeapLimits(npu=maxima["npu"], vpu=maxima["vpu"], vpp=maxima["vpp"]),
        current=MemoryLayout(npu=now["npu"], vpu=now["vpu"], vpp=now["vpp"]),
        ddr_mib=ddr,
        dts_file=dts,
        version=version,
    )


def parse_edit_output(text: str, workdir: Path) -> tuple[Path, str, MemoryLayout]:
    errors = _errors(text)
    if errors or "Info: check edit size ok" not in text:
        raise ProvisioningError(
            "memory_edit.sh -c failed: " + ("; ".join(errors) or "it never printed 'check edit size ok'"),
            hint=f"see the log_*.log files in {workdir}; nothing was installed",
        )
    checked: dict[str, int] = {}
    install_path = image = None
    for line in text.splitlines():
        if m := _CHECK.match(line.strip()):
            checked[m[1]] = int(m[3])
        elif m := _COPY.match(line.strip()):
            image, install_path = Path(m[1]), m[2]
    if image is None or install_path is None:
        raise ProvisioningError(
            "memory_edit.sh -c did not say which image to install (no 'sudo cp ... /boot/...' line)",
            hint=f"see the log in {workdir}",
        )
    if not image.is_absolute():
        image = workdir / image
    layout = MemoryLayout(npu=checked.get("npu", 0), vpu=checked.get("vpu", 0), vpp=checked.get("vpp", 0))
    return image, install_path, layout


def _fetch_kit(settings: ProvisioningSettings) -> Path:
    """Unpack the configured memory_edit kit (a .tar.xz path or URL with checksum) under the state dir."""
    kit = settings.memory_edit_kit
    assert kit is not None
    is_url = kit.startswith(("http://", "https://"))
    if is_url and not settings.memory_edit_kit_sha256:
        raise ProvisioningError(
            f"memory_edit kit {kit} is a URL without a checksum",
            hint="set provisioning.memory_edit_kit_sha256 to the kit's sha256",
        )
    kits = settings.state_dir / "kit"
    kits.mkdir(parents=True, exist_ok=True)
    if is_url:
        archive = kits / Path(kit.split("?")[0]).name
        download_file(kit, archive, sha256=settings.memory_edit_kit_sha256, progress=False)
    else:
        archive = Path(kit)
        if not archive.is_file():
            raise ProvisioningError(f"memory_edit kit {archive} does not exist")
    digest = sha256_file(archive)
    if settings.memory_edit_kit_sha256 and digest != settings.memory_edit_kit_sha256:
        raise ProvisioningError(
            f"memory_edit kit {archive} has sha256 {digest}, expected {settings.memory_edit_kit_sha256}",
            hint="the kit is corrupt or not the one configured; fetch it again",
        )
    dest = kits / digest[:16]
    if not any(dest.rglob(SCRIPT_NAME)):
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=kits))
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            os.replace(tmp, dest) if not dest.exists() else shutil.rmtree(tmp)
        except (tarfile.TarError, OSError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ProvisioningError(f"cannot unpack memory_edit kit {archive}: {exc}") from None
    found = sorted(dest.rglob(SCRIPT_NAME))
    if not found:
        raise ProvisioningError(f"memory_edit kit {archive} has no {SCRIPT_NAME}")
    return found[0]


def locate_memory_edit(settings: ProvisioningSettings) -> Path:
    """The script: configured path (file or dir), else the configured kit, else well-known places."""
    if settings.memory_edit is not None:
        path = settings.memory_edit
        if path.is_dir():
            path = path / SCRIPT_NAME
        if not path.is_file():
            raise ProvisioningError(
                f"memory_edit.sh not found at {settings.memory_edit}",
                hint="set provisioning.memory_edit to the unpacked sophon-tools memory_edit directory",
            )
        return path
    if settings.memory_edit_kit:
        return _fetch_kit(settings)
    for known in KNOWN_MEMORY_EDIT_PATHS:
        candidate = settings.path(known)
        if candidate.is_file():
            return candidate
    raise ProvisioningError(
        "memory_edit.sh (sophon-tools) was not found",
        hint="set provisioning.memory_edit (path) or provisioning.memory_edit_kit (tar.xz path or URL + sha256)",
    )


def _copy_kit(script: Path, dest: Path) -> Path:
    """A private copy of the script's directory, without the vendor's leftovers (logs, images, output)."""
    ignore = shutil.ignore_patterns("log_*.log", "*.itb", "output", "multi.its", "*.memeditBak")
    shutil.copytree(script.parent, dest, ignore=ignore, symlinks=True, dirs_exist_ok=True)
    copy = dest / script.name
    copy.chmod(copy.stat().st_mode | 0o111)
    return copy


def _run(script: Path, args: list[str], timeout: int) -> str:
    try:
        proc = subprocess.run(
            [str(script), *args],
            cwd=script.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ProvisioningError(f"memory_edit.sh {' '.join(args)} did not finish in {timeout} s") from None
    except OSError as exc:
        raise ProvisioningError(f"cannot run {script}: {exc.strerror}") from None
    if proc.returncode != 0 and not _errors(proc.stdout):
        raise ProvisioningError(
            f"memory_edit.sh {' '.join(args)} exited with {proc.returncode}: {proc.stdout.strip()[-400:]}"
        )
    return proc.stdout


def run_print(settings: ProvisioningSettings) -> MemoryEditReport:
    script = locate_memory_edit(settings)
    args = ["-p"] + ([settings.dts_name] if settings.dts_name else [])
    with tempfile.TemporaryDirectory(prefix="llm-tpu-memedit-") as tmp:
        out = _run(_copy_kit(script, Path(tmp) / "memory_edit"), args, settings.memory_edit_timeout_s)
    return parse_print_output(out)


def run_configure(settings: ProvisioningSettings, layout: MemoryLayout, workdir: Path) -> EditResult:
    """``memory_edit.sh -c`` for ``layout`` in a fresh copy under ``workdir``; installs nothing."""
    script = locate_memory_edit(settings)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.parent.mkdir(parents=True, exist_ok=True)
    copy = _copy_kit(script, workdir)
    args = ["-c", *layout.memory_edit_args()] + ([settings.dts_name] if settings.dts_name else [])
    out = _run(copy, args, settings.memory_edit_timeout_s)
    image, install_path, checked = parse_edit_output(out, workdir)
    if not image.is_file():
        raise ProvisioningError(f"memory_edit.sh reported {image} but it does not exist")
    return EditResult(image=image, install_path=install_path, checked=checked, log=out)
