"""Shared by the benchmarks: a realistic rootfs to measure on, and timing helpers."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_TREE = Path(os.environ.get("OSBUILDER_BENCH_ROOTFS", "/tmp/osbuilder-bench-rootfs"))
SOURCE_DATE_EPOCH = 1_700_000_000


def realistic_tree(argument: list[str]) -> Path:
    """The rootfs given on the command line, else a Debian bookworm (mmdebstrap --variant=required
    with systemd and busybox-static), built once and reused; else a copy of parts of /usr."""
    if argument:
        return Path(argument[0]).resolve()
    done = DEFAULT_TREE / ".osbuilder-bench-complete"
    if done.exists():
        return DEFAULT_TREE
    shutil.rmtree(DEFAULT_TREE, ignore_errors=True)
    print(f"building a benchmark rootfs in {DEFAULT_TREE} (once) ...", file=sys.stderr)
    result = subprocess.run(["mmdebstrap", "--variant=required", "--include=systemd,systemd-sysv,busybox-static",
                             "bookworm", str(DEFAULT_TREE)], capture_output=True, text=True)
    if result.returncode != 0:
        print("mmdebstrap failed; copying parts of /usr instead:\n" + result.stderr[-2000:], file=sys.stderr)
        shutil.rmtree(DEFAULT_TREE, ignore_errors=True)
        (DEFAULT_TREE / "usr").mkdir(parents=True)
        for part in ("bin", "sbin", "lib/python3.11", "share/zoneinfo", "share/perl"):
            source = Path("/usr") / part
            if source.exists():
                (DEFAULT_TREE / "usr" / part).parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", "-a", source, DEFAULT_TREE / "usr" / part], check=True)
    done.write_text("")
    done.chmod(0o644)
    os.utime(done, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
    return DEFAULT_TREE


def tree_size(root: Path) -> tuple[int, int]:
    files = total = 0
    for directory, subdirectories, names in os.walk(root):
        files += len(names) + len(subdirectories)
        for name in names:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                total += os.lstat(path).st_size
    return files, total


def timed(function: Callable[[], object], runs: int, before: Callable[[], object] | None = None) -> tuple[float, object]:
    """The median wall time of `runs` calls (each after an untimed `before`), and the last result."""
    times = []
    result: object = None
    for _ in range(runs):
        if before is not None:
            before()
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def run(argv: list[str | os.PathLike[str]], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([os.fspath(a) for a in argv], check=True, capture_output=True, **kwargs)  # type: ignore[call-overload, no-any-return]


def remove_work(work: Path) -> None:
    """A benchmark's working directory removed, unless a file system is still mounted in it."""
    from osbuilder.userns import mounts_below

    if mounts_below(work):
        sys.stderr.write(f"not removing {work}: file systems are still mounted in it\n")
    else:
        shutil.rmtree(work, ignore_errors=True)


def mib(value: int) -> str:
    return f"{value / (1 << 20):.1f} MiB"


def arguments(doc: str | None, configure: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rootfs", nargs="*", help="the rootfs to build from (default: a bookworm tree, made once)")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (the median is shown)")
    if configure is not None:
        configure(parser)
    return parser.parse_args()
