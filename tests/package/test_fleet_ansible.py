"""The fleet playbook (provisioning/ansible/site.yml) for real: ansible-playbook against three fake boxes.

Each box is its own Debian root filesystem with its own fake board (tests/support/fleet_boxes.py):
two SE7 16 GB (Debian 12) and one SM7 (Debian 11). Ansible reaches them through community.general's
chroot connection: no daemons, keys or ports to manage, and a module runs in the box exactly as it would
over SSH (copied in, run by the box's python3). The package is the real one: the SE7 group installs it
from the signed apt repository of `make package-test` (served over HTTP on 127.0.0.1), the SM7 group from the
.deb of `make deb`.

The reboot cannot happen in a chroot: the tests set ``llm_tpu_appliance_reboot_command`` to
``fake_board.py reboot /`` in the box, which plays the kernel booting the staged image (production leaves
it empty: ansible.builtin.reboot). systemd is played by ``llm_tpu_appliance_service_control: command``.

The scenarios build on each other (one fleet for the module, in file order): check mode on fresh boxes,
first run, idempotent second run, an unfit box, a failing canary, a layout that is not live after the reboot.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.fake_board import OTHER_DTS, Heaps
from support.fleet_boxes import FleetBox, make_box, parse_recap
from support.package_build import built_package

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "provisioning/ansible"
VENV_BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.package]

# What every test box needs that a real box does not (documented in the role's argument specs).
TEST_BOX_VARS: dict[str, Any] = {
    "ansible_connection": "community.general.chroot",
    "ansible_python_interpreter": "/usr/bin/python3",
    "ansible_become": False,
    "llm_tpu_appliance_sdk_required": False,
    "llm_tpu_appliance_memory_edit": "/opt/memory_edit/memory_edit.sh",
    "llm_tpu_appliance_reboot_command": ["python3", "/opt/fakeboard/fake_board.py", "reboot", "/"],
    "llm_tpu_appliance_service_control": "command",
    "llm_tpu_appliance_service_restart_command": ["/opt/fakeboard/service"],
    "llm_tpu_appliance_health_retries": 40,
    "llm_tpu_appliance_health_delay": 1,
    "llm_tpu_appliance_min_free_disk_mib": 64,
}
# The fleet as an operator would write it: fleet-wide settings, board groups, one host.
FLEET_VARS: dict[str, Any] = {
    "llm_tpu_appliance_package_source": "apt",  # the SM7 group installs the .deb instead
    "llm_tpu_appliance_config_fleet": {
        "model": {"ref": "/srv/tiny-qwen2/hf", "engine": "scripted"},
        "server": {"socket_path": "/run/llm-tpu/llm.sock", "socket_group": None},
        "scheduler": {"queue_size": 6},
        "provisioning": {"cpu_reserve_mib": 3072},
    },
}
SE7_VARS: dict[str, Any] = {
    "llm_tpu_appliance_board_dts_pattern": "^bm1684x_se7",
    "llm_tpu_appliance_need_mib": 7000,
    "llm_tpu_appliance_largest_mib": 3500,
    "llm_tpu_appliance_config_board": {"provisioning": {"vpp_reserve_mib": 512}},
}
SM7_VARS: dict[str, Any] = {
    "llm_tpu_appliance_board_dts_pattern": "^bm1684x_sm7",
    # hex bytes and suffixes: the package normalizes them, so the second run must not stage it again
    "llm_tpu_appliance_layout": {"npu": "0xc8000000", "vpu": "1G", "vpp": "1024M"},
    "llm_tpu_appliance_config_board": {"provisioning": {"vpu_reserve_mib": 256}},
}
SM7_PINNED = {"npu": 3200, "vpu": 1024, "vpp": 1024}
# The model every box pulls (the models phase): a bmodel served over HTTP like a fleet's model mirror,
# with the tokenizer each box already holds, verified by its sha256.
FLEET_MODEL = REPO / "tests/fixtures/tiny-qwen2/tiny-qwen2_bf16_seq64_1dev_sample.bmodel"
FLEET_MODEL_SHA256 = hashlib.sha256(FLEET_MODEL.read_bytes()).hexdigest()


@dataclass
class Run:
    rc: int
    stdout: str
    recap: dict[str, dict[str, int]]
    seconds: float
    summary: dict[str, Any]


class Fleet:
    def __init__(
        self, tmp: Path, boxes: list[FleetBox], deb: Path, repo_url: str, repo_key: Path, models_url: str
    ) -> None:
        self.tmp, self.boxes, self.deb = tmp, boxes, deb
        self.repo_url, self.repo_key, self.models_url = repo_url, repo_key, models_url
        self.host_vars: dict[str, dict[str, Any]] = {b.name: {} for b in boxes}
        self.fleet_vars = json.loads(json.dumps(FLEET_VARS))
        self.fleet_vars["llm_tpu_appliance_models"] = [self.model_entry("tiny-fleet", FLEET_MODEL_SHA256)]
        self.runs = 0

    def model_entry(self, name: str, sha256: str) -> dict[str, str]:
        return {
            "name": name,
            "ref": f"{self.models_url}/{FLEET_MODEL.name}",
            "sha256": sha256,
            "tokenizer": "/srv/tiny-qwen2/hf",
        }

    def box(self, name: str) -> FleetBox:
        return next(b for b in self.boxes if b.name == name)

    def write_inventory(self) -> Path:
        inv = self.tmp / "inventory"
        shutil.rmtree(inv, ignore_errors=True)
        (inv / "group_vars").mkdir(parents=True)
        (inv / "host_vars").mkdir()
        groups: dict[str, Any] = {}
        for b in self.boxes:
            groups.setdefault(b.group, {"hosts": {}})["hosts"][b.name] = {"ansible_host": str(b.root)}
        hosts = {"llm_tpu_fleet": {"children": groups, "vars": TEST_BOX_VARS}}
        (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
        fleet = {
            **self.fleet_vars,
            "llm_tpu_appliance_apt_repo_url": self.repo_url,
            "llm_tpu_appliance_apt_key_file": str(self.repo_key),
        }
        (inv / "group_vars/all.yml").write_text(yaml.safe_dump(fleet))
        (inv / "group_vars/se7_16g.yml").write_text(yaml.safe_dump(SE7_VARS))
        sm7 = {
            **SM7_VARS,
            "llm_tpu_appliance_package_source": "deb",
            "llm_tpu_appliance_deb_file": str(self.deb),
        }
        (inv / "group_vars/sm7.yml").write_text(yaml.safe_dump(sm7))
        for name, values in self.host_vars.items():
            if values:
                (inv / f"host_vars/{name}.yml").write_text(yaml.safe_dump(values))
        return inv / "hosts.yml"

    def play(self, *args: str) -> Run:
        inventory = self.write_inventory()
        summary_dir = self.tmp / "summary"
        env = {
            "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(self.tmp / "home"),
            "LC_ALL": "C.UTF-8",
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(self.tmp / "ansible-tmp"),
        }
        cmd = [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            str(inventory),
            "site.yml",
            "-e",
            f"llm_tpu_appliance_summary_dir={summary_dir}",
            *args,
        ]
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=ANSIBLE_DIR, env=env, capture_output=True, text=True, timeout=1200)
        seconds = time.monotonic() - start
        out = proc.stdout + proc.stderr
        self.runs += 1
        (self.tmp / f"play-{self.runs:02d}.log").write_text(out)
        summary_file = summary_dir / "fleet-summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        return Run(proc.returncode, out, parse_recap(proc.stdout), seconds, summary)


def package_depends(deb: Path) -> tuple[str, ...]:
    """The package's Depends, preinstalled in the boxes (they install offline: no Debian sources)."""
    field = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True, text=True, check=True
    )
    return tuple(
        sorted({dep.split("|")[0].split("(")[0].split(":")[0].strip() for dep in field.stdout.split(",")})
    )


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr (it would fill the test log)."""


@contextlib.contextmanager
def serve_directory(root: Path) -> Iterator[str]:
    """A directory over HTTP on 127.0.0.1 (the signed apt repository, the model mirror), as a fleet's
    boxes would reach it."""
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    deb, repo = built_package()
    depends = package_depends(deb)
    # Not under pytest's basetemp: other pytest sessions on this machine rotate those away.
    tmp = Path(tempfile.mkdtemp(prefix="llm-tpu-fleet-", dir="/var/tmp"))
    (tmp / "home").mkdir()
    boxes: list[FleetBox] = []
    mirror = tmp / "model-mirror"
    mirror.mkdir()
    shutil.copy2(FLEET_MODEL, mirror / FLEET_MODEL.name)
    try:
        with serve_directory(repo) as url, serve_directory(mirror) as models_url:
            boxes.append(make_box(tmp / "se7-a", "se7-a", "se7_16g", extra_packages=depends))
            # already runs a layout that holds the SE7 group's model: nothing to stage there
            boxes.append(
                make_box(
                    tmp / "se7-b", "se7-b", "se7_16g", heaps=Heaps(7100, 1024, 3072), extra_packages=depends
                )
            )
            boxes.append(
                make_box(
                    tmp / "sm7-a",
                    "sm7-a",
                    "sm7",
                    release="bullseye",
                    heaps=Heaps(2048, 1024, 1024),
                    ddr_gib=(4, 4, 4),
                    dts=OTHER_DTS,
                    extra_packages=depends,
                )
            )
            yield Fleet(tmp, boxes, deb, url, repo / "llm-tpu-appliance.gpg", models_url)
    finally:
        for b in boxes:
            b.destroy()
        print(f"\nansible logs of this run: {tmp}/play-*.log")


TIMES: dict[str, float] = {}


def live(box: FleetBox) -> dict[str, int]:
    h = box.board.live_heaps()
    return {"npu": h.npu, "vpu": h.vpu, "vpp": h.vpp}


def test_check_mode_on_fresh_boxes_reports_and_changes_nothing(fleet: Fleet) -> None:
    before = {b.name: b.snapshot() for b in fleet.boxes}
    run = fleet.play("--check")
    assert run.rc == 0, run.stdout[-3000:]
    assert set(run.recap) >= {"se7-a", "se7-b", "sm7-a"}
    for b in fleet.boxes:
        assert run.recap[b.name]["changed"] > 0, f"{b.name}: --check must report the install"
        assert b.snapshot() == before[b.name], f"{b.name}: --check changed the box"
        assert b.boots == 1
    records = run.summary["hosts"]
    assert all(r["check_mode"] and r["result"] == "ok" for r in records.values())
    assert "would install llm-tpu-appliance from http://127.0.0.1" in run.stdout  # se7: the apt repository
    assert "would install llm-tpu-appliance_" in run.stdout  # sm7: the .deb
    assert "would write /etc/llm-tpu/conf.d/50-ansible.yaml" in run.stdout


def test_first_run_installs_configures_stages_and_reboots_where_needed(fleet: Fleet) -> None:
    run = fleet.play()
    TIMES["first run"] = run.seconds
    assert run.rc == 0, run.stdout[-4000:]
    a, b, sm7 = fleet.box("se7-a"), fleet.box("se7-b"), fleet.box("sm7-a")
    for box in fleet.boxes:
        assert (
            box.run("dpkg-query", "-W", "-f=${Status}", "llm-tpu-appliance").stdout == "install ok installed"
        )
        # the conffile is the package's, untouched (dpkg --verify lists modified files)
        assert box.run("dpkg", "--verify", "llm-tpu-appliance").stdout == ""
        # the models phase: pulled from the mirror, verified, installed with the box's tokenizer
        info = json.loads(box.run("/usr/bin/llm-tpu", "models", "info", "tiny-fleet", "--json").stdout)
        weights = [f for f in info["files"] if f["role"] == "weights"]
        assert [f["sha256"] for f in weights] == [FLEET_MODEL_SHA256], info
        assert box.path("/var/lib/llm-tpu/models/tiny-fleet/token_config/tokenizer.json").is_file()
    records = run.summary["hosts"]
    # se7-a: factory layout, the 3500 MiB allocation fits no heap -> staged, rebooted, verified
    ra = records["se7-a"]
    assert ra["memory"] == "staged" and ra["reboot_done"] and not ra["reboot_pending"]
    assert ra["layout_before"] == {"npu": 2414, "vpu": 2944, "vpp": 3072}
    assert ra["layout_after"] == ra["layout_planned"] == live(a) and live(a)["npu"] == 7000
    assert a.boots == 2
    # se7-b already holds the model: nothing staged, no reboot
    rb = records["se7-b"]
    assert rb["memory"] == "unchanged" and not rb["reboot_done"] and b.boots == 1
    # sm7-a: the pinned layout, given in hex bytes and suffixes, normalized and live after the reboot
    rs = records["sm7-a"]
    assert rs["layout_planned"] == rs["layout_after"] == live(sm7) == SM7_PINNED
    assert rs["reboot_done"] and sm7.boots == 2
    assert rs["board"]["dts"] == f"{OTHER_DTS}.dts" and rs["board"]["maxima"]["npu"] == "3519"
    for r in records.values():
        assert r["result"] == "ok" and r["health"]["status"] == "ready", r
        assert r["health"]["engine"] == "scripted"
    assert run.summary["counts"] == {"ok": 3, "failed": 0, "not reached": 0, "rebooted": 2}


def test_board_overlays_merge_key_by_key(fleet: Fleet) -> None:
    """A fleet-wide setting never strips a board-specific one: fleet < board < host, key by key."""
    fleet.host_vars["se7-b"] = {"llm_tpu_appliance_config_host": {"scheduler": {"queue_size": 2}}}
    run = fleet.play("--tags", "configure")
    assert run.rc == 0, run.stdout[-3000:]

    def effective(box: FleetBox) -> dict[str, Any]:
        out = box.run("/usr/bin/llm-tpu", "config", "show", "--json").stdout
        return {k: v["value"] for k, v in json.loads(out)["values"].items()}

    a, b, sm7 = (effective(fleet.box(n)) for n in ("se7-a", "se7-b", "sm7-a"))
    for cfg in (a, b, sm7):
        assert cfg["provisioning.cpu_reserve_mib"] == 3072  # fleet
    assert a["provisioning.vpp_reserve_mib"] == 512 and a["provisioning.vpu_reserve_mib"] == 0  # SE7 board
    assert (
        sm7["provisioning.vpu_reserve_mib"] == 256 and sm7["provisioning.vpp_reserve_mib"] == 0
    )  # SM7 board
    assert a["scheduler.queue_size"] == 6 and b["scheduler.queue_size"] == 2  # host beats fleet
    assert b["provisioning.vpp_reserve_mib"] == 512  # ... without losing the board's setting
    dropin = fleet.box("se7-b").path("/etc/llm-tpu/conf.d/50-ansible.yaml").read_text()
    assert "# Ansible managed" in dropin.splitlines()[:3]  # ansible_managed, as a comment


def test_second_run_changes_nothing_and_never_reboots(fleet: Fleet) -> None:
    boots = {b.name: b.boots for b in fleet.boxes}
    images = {b.name: b.board.boot_image.read_bytes() for b in fleet.boxes}
    run = fleet.play()
    TIMES["second run"] = run.seconds
    assert run.rc == 0, run.stdout[-3000:]
    for b in fleet.boxes:
        assert run.recap[b.name]["changed"] == 0, f"{b.name}: {run.recap[b.name]}"
        assert b.boots == boots[b.name], f"{b.name} rebooted"
        assert b.board.boot_image.read_bytes() == images[b.name]
    assert all(not r["reboot_done"] for r in run.summary["hosts"].values())
    print(f"\nfleet run wall time: first {TIMES['first run']:.1f} s, second {TIMES['second run']:.1f} s")


def test_unfit_box_fails_with_the_provisioning_message_and_spares_the_others(fleet: Fleet) -> None:
    fleet.host_vars["se7-b"] = {"llm_tpu_appliance_need_mib": 20000}
    fleet.fleet_vars["llm_tpu_appliance_config_fleet"]["scheduler"]["queue_size"] = 5
    # canary se7-a, then one batch of two: one of two failing is 50%, within a max_fail_percentage of 50
    run = fleet.play(
        "-e", '{"llm_tpu_appliance_serial": [1, 2], "llm_tpu_appliance_max_fail_percentage": 50}'
    )
    assert run.rc == 2, run.stdout[-3000:]
    assert run.recap["se7-b"]["failed"] == 1
    assert run.recap["se7-a"]["failed"] == 0 and run.recap["sm7-a"]["failed"] == 0
    records = run.summary["hosts"]
    assert records["se7-b"]["result"] == "failed"
    assert "no layout on this board holds" in records["se7-b"]["message"]
    assert "can give it at most" in records["se7-b"]["message"]
    assert records["sm7-a"]["result"] == "ok" and records["se7-a"]["result"] == "ok"
    assert "queue_size: 5" in fleet.box("sm7-a").path("/etc/llm-tpu/conf.d/50-ansible.yaml").read_text()
    assert "PLAY [Fleet summary]" in run.stdout  # the rollout went on to the end


def test_canary_failure_stops_the_rollout_before_the_next_batch(fleet: Fleet) -> None:
    fleet.host_vars["se7-b"] = {}
    fleet.host_vars["se7-a"] = {"llm_tpu_appliance_need_mib": 20000}
    fleet.fleet_vars["llm_tpu_appliance_config_fleet"]["scheduler"]["queue_size"] = 3
    run = fleet.play()
    assert run.rc == 2, run.stdout[-3000:]
    assert set(run.recap) - {"localhost"} == {"se7-a"}, run.recap  # nobody after the canary was touched
    for name in ("se7-b", "sm7-a"):
        assert "queue_size: 3" not in fleet.box(name).path("/etc/llm-tpu/conf.d/50-ansible.yaml").read_text()
    records = run.summary["hosts"]
    assert (
        records["se7-a"]["result"] == "failed"
        and "no layout on this board holds" in records["se7-a"]["message"]
    )
    assert records["se7-b"]["result"] == records["sm7-a"]["result"] == "not reached"
    fleet.host_vars["se7-a"] = {}


def test_layout_not_live_after_reboot_is_rolled_back_and_not_retried(fleet: Fleet) -> None:
    b = fleet.box("se7-b")
    before_image = b.board.boot_image.read_bytes()
    before_live = live(b)
    (b.root / "build/boot-keeps-old-heaps").touch()  # the box boots, but its heaps stay as they were
    fleet.host_vars["se7-b"] = {"llm_tpu_appliance_layout": {"npu": 7200, "vpu": 1024, "vpp": 2944}}
    run = fleet.play("--limit", "se7-b")
    assert run.rc == 2, run.stdout[-3000:]
    record = run.summary["hosts"]["se7-b"]
    assert record["reboot_done"] and b.boots == 2
    assert "is not live after the reboot" in record["message"]
    assert record["layout_after"] == before_live
    assert b.board.boot_image.read_bytes() == before_image, "the previous boot image must be restored"
    status = json.loads(b.run("/usr/bin/llm-tpu", "provision", "status", "--json").stdout)
    assert status["pending"] is None and status["failed"]["expected"] == {
        "npu": 7200,
        "vpu": 1024,
        "vpp": 2944,
    }

    # the next run refuses the same layout instead of staging and rebooting again
    run = fleet.play("--limit", "se7-b")
    assert run.rc == 2
    assert "was staged before and was not live after the reboot" in run.summary["hosts"]["se7-b"]["message"]
    assert b.boots == 2 and b.board.boot_image.read_bytes() == before_image
    (b.root / "build/boot-keeps-old-heaps").unlink()
    fleet.host_vars["se7-b"] = {}


def test_pull_mode_units_run_ansible_pull_once_at_a_time(fleet: Fleet) -> None:
    box = fleet.box("se7-a")
    fleet.host_vars["se7-a"] = {
        "llm_tpu_appliance_pull_enabled": True,
        "llm_tpu_appliance_pull_repo": "/srv/fleet.git",
        "llm_tpu_appliance_pull_packages": [],  # offline box: ansible-core and git are played below
    }
    run = fleet.play("--tags", "pull", "--limit", "se7-a")
    fleet.host_vars["se7-a"] = {}
    assert run.rc == 0, run.stdout[-3000:]
    service = box.path("/etc/systemd/system/llm-tpu-fleet-pull.service").read_text()
    timer = box.path("/etc/systemd/system/llm-tpu-fleet-pull.timer").read_text()
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))[
        len("ExecStart=") :
    ]
    assert "--only-if-changed" in exec_start and "--url /srv/fleet.git" in exec_start
    assert exec_start.startswith("/usr/bin/flock --nonblock")
    assert "OnUnitInactiveSec=30min" in timer and "Persistent=true" in timer

    # systemd-analyze verify in the box's root, with a stand-in ansible-pull (not installed offline) that
    # takes a while and counts its runs: two pulls started together run once (flock), the other exits 0.
    shutil.copytree(
        "/usr/lib/systemd/system", box.path("/usr/lib/systemd/system"), dirs_exist_ok=True, symlinks=True
    )
    stand_in = box.path("/usr/bin/ansible-pull")
    stand_in.write_text("#!/bin/sh\necho run >>/var/log/ansible-pull-runs\nsleep 2\n")
    stand_in.chmod(0o755)
    verify = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            f"--root={box.root}",
            "llm-tpu-fleet-pull.service",
            "llm-tpu-fleet-pull.timer",
        ],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0 and "llm-tpu-fleet-pull" not in verify.stderr, verify.stderr
    first = subprocess.Popen(["chroot", str(box.root), "/bin/sh", "-c", exec_start])
    time.sleep(0.5)
    second = box.chroot.run(exec_start, check=False, capture_output=True)
    assert second.returncode == 0
    assert first.wait(timeout=30) == 0
    assert box.path("/var/log/ansible-pull-runs").read_text() == "run\n"
    stand_in.unlink()
    real_ansible_pull_honours_the_unit_command(exec_start, fleet.tmp / "pull")


def real_ansible_pull_honours_the_unit_command(exec_start: str, tmp: Path) -> None:
    """The unit's command line with the real ansible-pull (the controller's, from PyPI) and git, on a
    local repository whose playbook only counts its runs: the first pull applies it, a pull with nothing
    new does not (--only-if-changed), a new commit is applied again. Only paths are swapped: the
    ansible-pull binary, the lock and checkout directory, the repository URL."""
    origin, checkout, count = tmp / "fleet.git", tmp / "checkout", tmp / "runs"
    (origin / "inventory/fleet").mkdir(parents=True)
    (origin / "inventory/fleet/hosts.yml").write_text(
        yaml.safe_dump({"all": {"hosts": {"localhost": {"ansible_connection": "local"}}}})
    )
    play = [
        {
            "name": "count",
            "hosts": "all",
            "gather_facts": False,
            "tasks": [{"ansible.builtin.shell": f"echo run >> {count}"}],
        }
    ]
    (origin / "site.yml").write_text(yaml.safe_dump(play))
    git = ["git", "-C", str(origin), "-c", "user.name=fleet", "-c", "user.email=fleet@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(origin)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "fleet"], check=True)
    argv = exec_start.split()
    argv[argv.index("/usr/bin/ansible-pull")] = str(VENV_BIN / "ansible-pull")
    argv[argv.index("/run/llm-tpu-fleet-pull.lock")] = str(tmp / "pull.lock")
    argv[argv.index("--url") + 1] = str(origin)
    argv[argv.index("--directory") + 1] = str(checkout)
    env = {
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "HOME": str(tmp),
        "LC_ALL": "C.UTF-8",
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
    }

    def pull() -> str:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc.stdout

    pull()
    assert count.read_text() == "run\n"
    assert "Repository has not changed, quitting" in pull()
    assert count.read_text() == "run\n"
    (origin / "README").write_text("a change\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "change"], check=True)
    pull()
    assert count.read_text() == "run\nrun\n"


def test_model_with_another_checksum_fails_its_box_and_installs_nothing(fleet: Fleet) -> None:
    """A mirror serving other bytes than the inventory's sha256 fails that box with the checksum message;
    the model is not installed, the other boxes are untouched, and a later run does not reinstall."""
    bad = "0" * 64
    fleet.host_vars["sm7-a"] = {"llm_tpu_appliance_models": [fleet.model_entry("tiny-mirror-bad", bad)]}
    run = fleet.play("--tags", "models")
    fleet.host_vars["sm7-a"] = {}
    assert run.rc == 2, run.stdout[-3000:]
    assert run.recap["sm7-a"]["failed"] == 1
    assert run.recap["se7-a"]["failed"] == run.recap["se7-b"]["failed"] == 0
    assert run.recap["se7-a"]["changed"] == run.recap["se7-b"]["changed"] == 0  # tiny-fleet is there
    assert f"does not match the expected {bad}" in run.stdout
    sm7 = fleet.box("sm7-a")
    assert not sm7.path("/var/lib/llm-tpu/models/tiny-mirror-bad").exists()
    assert "tiny-mirror-bad" not in sm7.run("/usr/bin/llm-tpu", "models", "list").stdout
