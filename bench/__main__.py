"""Run every benchmark module in bench/ (python -m bench [NAME ...]), each in its own process.

Separate processes keep one benchmark from disturbing the next (an idle cmodel runtime keeps
busy-polling threads for the rest of its process).
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import time

import bench


def main(argv: list[str]) -> int:
    names = argv or sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")
    )
    failed = []
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", f"bench.{name}"])
        print(f"({name}: {time.perf_counter() - start:.1f} s)", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
