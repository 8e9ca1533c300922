#!/usr/bin/env python3
"""A remote cache hit against a local rebuild, for the rootfs and the kernel, measured in the same run.

A CI runner that lacks an entry either builds it or pulls it from the remote cache. Against a
real registry (Debian's docker-registry on 127.0.0.1, plain HTTP, started here):
  rootfs  local rebuild: `build-rootfs --no-cache` of the default rootfs (Ubuntu noble, systemd)
          with the package cache already filled (the rebuild's best case: no downloads);
          remote hit: the same command on an empty cache directory with --remote-cache (pull).
  kernel  local rebuild: `build-kernel --no-cache` of the default kernel (the source unpacked
          already); remote hit: an empty cache directory pulling the entry.
Each figure is the whole process's wall time, median of --rounds runs (the kernel's rebuild
--kernel-rebuilds times, default once: about ten minutes on 2 cores), and the bytes the remote
hit transferred (the compressed layers, the config and the manifest).

    python benchmarks/remote_cache.py [--rounds 3] [--kernel-rebuilds 1] [--skip-kernel] [--json-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from osbuilder.paths import default_cache_dir  # noqa: E402
from tests.helpers.registry import Registry  # noqa: E402


def osbuilder(*args: str | os.PathLike[str], cwd: Path) -> tuple[float, dict[str, Any]]:
    """One osbuilder run: its wall time and its --json."""
    env = {**os.environ, "OSBUILDER_NO_PROGRESS": "1"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "osbuilder", *map(os.fspath, args), "--json"], cwd=cwd, env=env,
                            capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"osbuilder {' '.join(map(str, args))} failed:\n{result.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(result.stdout)
    return seconds, data


def measure(name: str, work: Path, registry: Registry, cache: Path, command: list[str], rounds: int,
            rebuilds: int, output: Path) -> dict[str, Any]:
    remote = ["--remote-cache", registry.url]
    # The entry in the local cache, pushed to the registry (and its packages or source cached).
    _, first = osbuilder("--cache-dir", cache, *remote, "--remote-cache-mode", "push", *command, "-o", output, cwd=work)
    key = first["cache_key"]
    osbuilder("--cache-dir", cache, *remote, "cache", "push", key, cwd=work)
    rebuild_times = []
    for _ in range(rebuilds):
        shutil.rmtree(output, ignore_errors=True)
        seconds, data = osbuilder("--cache-dir", cache, *command, "--no-cache", "-o", output, cwd=work)
        assert data["cache"] == "built", data["cache"]
        rebuild_times.append(seconds)
    hit_times, transferred = [], []
    for round_number in range(rounds):
        empty = work / f"{name}-empty-cache-{round_number}"
        shutil.rmtree(output, ignore_errors=True)
        seconds, data = osbuilder("--cache-dir", empty, *remote, "--remote-cache-mode", "pull", *command, "-o",
                                  output, cwd=work)
        assert data["cache"] == "remote", data["cache"]
        hit_times.append(seconds)
        transferred.append(data["remote_cache"]["bytes_down"])
        shutil.rmtree(empty, ignore_errors=True)
    rebuild = statistics.median(rebuild_times) if rebuild_times else None
    hit = statistics.median(hit_times)
    return {"step": name, "key": key, "local_rebuild_s": round(rebuild, 2) if rebuild else None,
            "local_rebuild_runs": len(rebuild_times), "remote_hit_s": round(hit, 2), "remote_hit_runs": len(hit_times),
            "ratio": round(hit / rebuild, 4) if rebuild else None,
            "bytes_transferred": int(statistics.median(transferred))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="remote hits (and rootfs rebuilds) per step")
    parser.add_argument("--kernel-rebuilds", type=int, default=1,
                        help="kernel rebuilds (about 10 minutes each; 0: only the remote hits)")
    parser.add_argument("--skip-kernel", action="store_true")
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    cache = Path(os.environ.get("OSBUILDER_CACHE_DIR") or default_cache_dir())
    work = Path(tempfile.mkdtemp(prefix="osbuilder-bench-remote-"))
    registry = Registry(work / "registry").start()
    results = []
    try:
        results.append(measure("rootfs", work, registry, cache, ["build-rootfs", "--force"], args.rounds,
                               args.rounds, work / "rootfs"))
        if not args.skip_kernel:
            results.append(measure("kernel", work, registry, cache, ["build-kernel", "--arch", "x86_64"], args.rounds,
                                   args.kernel_rebuilds, work / "kernel"))
    finally:
        registry.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    if not args.json_only:
        print(f"{'step':<8} {'local rebuild':>14} {'remote hit':>11} {'ratio':>7} {'transferred':>12}")
        for row in results:
            rebuild = f"{row['local_rebuild_s']:>12.2f} s" if row["local_rebuild_s"] else f"{'-':>14}"
            ratio = f"{row['ratio']:>6.3f}x" if row["ratio"] else f"{'-':>7}"
            print(f"{row['step']:<8} {rebuild} {row['remote_hit_s']:>9.2f} s {ratio} "
                  f"{row['bytes_transferred'] / 2**20:>8.1f} MiB"
                  f"   (rebuild runs {row['local_rebuild_runs']}, hit runs {row['remote_hit_runs']})")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
