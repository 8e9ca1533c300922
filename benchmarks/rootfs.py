#!/usr/bin/env python3
"""Rootfs build times against the baseline, measured in the same run.

Baseline: plain mmdebstrap with the recipe's package set into a directory, which is what Kata's
rootfs.sh runs for Ubuntu (it downloads every package each time). Variants:
  cold          osbuilder with an empty cache (downloads, bootstraps, provisions, caches, installs)
  cold-no-keyring  the cold runs less their keyring phase (the baseline is given the keyring)
  cold-rootfs   osbuilder --no-cache with the package cache filled (a changed agent or option)
  warm          osbuilder again, unchanged: a rootfs cache hit

Runs are interleaved round by round (the baseline's place in the sequence moves from round to
round, the disks are synced before every run and outputs are deleted only after the last run),
so load from other work on the machine hits every variant alike; the table shows the median of
each. Times are whole-process wall times.
Targets: cold <= 1.1 x baseline, warm <= 0.1 x.

    python benchmarks/rootfs.py [--rounds N] [--distro ubuntu --release noble] [--json-only]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _common import remove_work  # noqa: E402

from osbuilder.agent_build import reference_agent  # noqa: E402
from osbuilder.arch import host_arch  # noqa: E402
from osbuilder.context import Context  # noqa: E402
from osbuilder.paths import DEFAULT_DISTROS_DIR, DEFAULT_VERSIONS, default_cache_dir  # noqa: E402
from osbuilder.rootfs.bootstrappers.keyring import resolve_keyring  # noqa: E402
from osbuilder.rootfs.bootstrappers.mmdebstrap import mmdebstrap_version  # noqa: E402

SOURCE_DATE_EPOCH = "1700000000"
TARGETS = {"cold": 1.1, "warm": 0.1}


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        stdout, stderr = process.communicate()
    except BaseException:
        # Let mmdebstrap unmount its chroot and clean up (SIGKILL would leave mounts behind).
        process.terminate()
        process.wait(timeout=60)
        raise
    elapsed = time.monotonic() - started
    result = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-3000:])
        raise SystemExit(f"failed: {' '.join(argv)}")
    return elapsed, result


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--distro", default="ubuntu")
    parser.add_argument("--release", default="noble")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON result")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, _terminate)
    work = Path(tempfile.mkdtemp(prefix="osbuilder-bench-"))
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "OSBUILDER_NO_PROGRESS": "1"}
    try:
        context = Context(versions_path=DEFAULT_VERSIONS, distros_dir=DEFAULT_DISTROS_DIR, cache_dir=work / "keys")
        recipe = context.recipe(args.distro)
        release = recipe.release(args.release)
        init = recipe.init("systemd")
        keyring = resolve_keyring(recipe, host_arch(), context.versions, context.cache, context.fetcher)
        # The reference agent, from the user's cache (built once), as the release builds embed it.
        user = Context(versions_path=DEFAULT_VERSIONS, distros_dir=DEFAULT_DISTROS_DIR, cache_dir=default_cache_dir())
        agent = reference_agent(user.versions.agent_version, user.cache)
        baseline_argv = ["mmdebstrap", "--mode=root" if os.geteuid() == 0 else "--mode=unshare",
                         f"--variant={recipe.bootstrap.variant}",
                         f"--components={','.join(recipe.bootstrap.components)}",
                         f"--include={','.join(init.packages)}", *([f"--keyring={keyring}"] if keyring else []),
                         release.suite]
        osbuilder = [sys.executable, "-m", "osbuilder"]
        build_args = ["build-rootfs", "--distro", recipe.name, "--os-version", release.codename,
                      "--agent", str(agent), "--json"]
        times: dict[str, list[float]] = {"baseline": [], "cold": [], "cold-rootfs": [], "warm": []}
        hits: dict[str, list[bool]] = {"cold": [], "cold-rootfs": [], "warm": []}
        phases: dict[str, list[dict[str, float]]] = {"cold": [], "cold-rootfs": [], "warm": []}
        loads: list[str] = []
        for round_number in range(args.rounds):
            place = work / f"round-{round_number}"
            place.mkdir()
            cache = place / "cache"
            runs = [
                ("cold", [*osbuilder, "--cache-dir", str(cache), *build_args, "-o", str(place / "cold")]),
                ("cold-rootfs", [*osbuilder, "--cache-dir", str(cache), *build_args, "--no-cache",
                                 "-o", str(place / "cold-rootfs")]),
                ("warm", [*osbuilder, "--cache-dir", str(cache), *build_args, "-o", str(place / "warm")]),
            ]
            # The baseline moves through the sequence from round to round, so that no variant always
            # runs after the same neighbour.
            runs.insert(round_number % (len(runs) + 1), ("baseline", [*baseline_argv, str(place / "baseline")]))
            for name, argv in runs:
                os.sync()  # every run starts without the previous one's unwritten data
                loads.append(_load())
                elapsed, result = _timed(argv, env)
                times[name].append(elapsed)
                if name in hits:
                    data = json.loads(result.stdout)
                    hits[name].append(bool(data["cache_hit"]))
                    phases[name].append(data.get("timings", {}))
                if not args.json_only:
                    sys.stderr.write(f"round {round_number + 1}: {name:<12} {elapsed:7.2f} s (load {loads[-1]})\n")
            # Nothing is deleted until every run is measured: deleting a tree (slow on some disks,
            # which free blocks synchronously) would charge whichever run comes next.
        # The baseline is handed the archive keyring; a cold osbuilder cache on a host without it
        # fetches it first (once per cache). The same runs without that phase, for comparison.
        times["cold-no-keyring"] = [elapsed - phase.get("keyring", 0.0)
                                    for elapsed, phase in zip(times["cold"], phases["cold"], strict=True)]
        median = {name: statistics.median(values) for name, values in times.items()}
        ratios = {name: median[name] / median["baseline"] for name in median if name != "baseline"}
        report: dict[str, Any] = {
            "benchmark": "rootfs",
            "distro": recipe.name,
            "release": release.codename,
            "init": "systemd",
            "packages": list(init.packages),
            "rounds": args.rounds,
            "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "mmdebstrap": mmdebstrap_version(),
                     "load_during_runs": loads},
            "seconds": times,
            "median_seconds": {name: round(value, 3) for name, value in median.items()},
            "ratio_to_baseline": {name: round(value, 3) for name, value in ratios.items()},
            "cache_hit": hits,
            "osbuilder_phases": phases,
            "targets": {name: {"max_ratio": limit, "met": ratios[name] <= limit} for name, limit in TARGETS.items()},
        }
        if not args.json_only:
            print(f"{'variant':<12} {'median s':>9} {'x baseline':>11}  runs")
            for name in ("baseline", "cold", "cold-no-keyring", "cold-rootfs", "warm"):
                ratio = "" if name == "baseline" else f"{ratios[name]:.3f}"
                runs_text = ", ".join(f"{value:.2f}" for value in times[name])
                print(f"{name:<12} {median[name]:>9.2f} {ratio:>11}  {runs_text}")
            for name, limit in TARGETS.items():
                verdict = "met" if ratios[name] <= limit else "NOT met"
                print(f"target {name}: <= {limit} x baseline: {verdict} ({ratios[name]:.3f})")
        print(json.dumps(report, indent=2))
        return 0
    finally:
        remove_work(work)


if __name__ == "__main__":
    sys.exit(main())
