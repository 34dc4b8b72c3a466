"""Run every benchmark module in bench/ (python -m bench [NAME ...]), each in its own process.

Separate processes keep one benchmark from disturbing the next (an idle cmodel runtime keeps
busy-polling threads for the rest of its process). Each runs in its own process group under a time
limit (--timeout, default 900 s): a benchmark that hangs is killed with everything it started (a
`llm-tpu serve` child included), reported as failed, and the run goes on with the next one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pkgutil
import signal
import subprocess
import sys
import time

import bench


def run_one(name: str, timeout_s: float) -> int:
    """Exit status of ``python -m bench.<name>``; -1 when it had to be killed after ``timeout_s``."""
    proc = subprocess.Popen([sys.executable, "-m", f"bench.{name}"], start_new_session=True)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        print(f"{name}: no result after {timeout_s:.0f} s; killing it", flush=True)
        return -1
    except KeyboardInterrupt:
        return -2
    finally:
        # Whether it ended or not, what it started may still run (a service child): end the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmark modules (default: every bench_*)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per benchmark (900)")
    args = parser.parse_args(argv)
    names = args.names or sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")
    )
    failed = []
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        rc = run_one(name, args.timeout)
        print(f"({name}: {time.perf_counter() - start:.1f} s)", flush=True)
        if rc:
            failed.append(name)
        if rc == -2:
            break
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
