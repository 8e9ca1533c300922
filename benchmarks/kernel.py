"""Kernel build benchmark, each step against its baseline in the same run.

1. osbuilder's cold build of the default configuration (no kernel cache, no ccache, clean O=)
   against plain `make -j$(nproc) vmlinux bzImage` of the same .config in the same source tree
   (target: osbuilder / make <= 1.05).
2. The sizes of vmlinux and vmlinuz.
3. A rebuild through ccache: cold ccache (empty directory) against warm ccache (the same again).
4. Whether the three osbuilder builds produced identical images (reproducibility, for free).

    .venv/bin/python benchmarks/kernel.py [--arch x86_64] [-j N] [--skip-ccache] [--json FILE]

Four cold-ish kernel builds: about 40 minutes on 2 cores. The source comes from the user's cache
(unpacked before timing starts); nothing is stored in the kernel cache; ccache runs use a temporary
CCACHE_DIR. Other work on the machine skews the figures: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from osbuilder.context import Context
from osbuilder.kernel.build import KernelBuild, KernelOptions, build_kernel, check_kernel_config, plan_kernel
from osbuilder.kernel.source import prepare_source
from osbuilder.paths import DEFAULT_DISTROS_DIR, DEFAULT_VERSIONS, default_cache_dir
from osbuilder.runner import TOOL_VERSIONS


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cpu_seconds() -> float:
    """User + system time of this process and of its waited-for children (make, gcc, ...). Unlike
    wall time it hardly moves when other work shares the machine."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def timed_build(context: Context, options: KernelOptions) -> tuple[float, float, KernelBuild]:
    started, cpu = time.monotonic(), cpu_seconds()
    build = build_kernel(options, versions=context.versions, cache=context.cache, fetcher=context.fetcher)
    return time.monotonic() - started, cpu_seconds() - cpu, build


def plain_make(tree: Path, config: Path, work: Path, arch: str, jobs: int) -> tuple[float, float]:
    work.mkdir(parents=True)
    shutil.copyfile(config, work / ".config")
    env = {**os.environ, "CCACHE_DISABLE": "1", "MAKEFLAGS": "", "MAKELEVEL": "0"}
    targets = ["vmlinux", "bzImage"] if arch == "x86_64" else ["Image", "Image.gz"]
    cross = [] if arch == "x86_64" else ["CROSS_COMPILE=aarch64-linux-gnu-"]
    argv = ["make", "-C", str(tree), f"O={work}", f"ARCH={arch if arch == 'x86_64' else 'arm64'}", *cross,
            f"-j{jobs}", *targets]
    started, cpu = time.monotonic(), cpu_seconds()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started, cpu_seconds() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="x86_64", choices=("x86_64", "aarch64"))
    parser.add_argument("-j", "--jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--skip-ccache", action="store_true")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="benchmark: %(message)s")
    os.environ.setdefault("OSBUILDER_NO_PROGRESS", "1")
    context = Context(versions_path=DEFAULT_VERSIONS, distros_dir=DEFAULT_DISTROS_DIR, cache_dir=default_cache_dir())
    results: dict[str, Any] = {"arch": args.arch, "jobs": args.jobs, "cpus": os.cpu_count(), "load_before": load()}
    work = Path(tempfile.mkdtemp(prefix="osb-kernel-bench-"))
    in_use = contextlib.ExitStack()
    try:
        # Unpack the source and build kconfig once, outside the timings.
        check_kernel_config(KernelOptions(arch=args.arch), versions=context.versions, cache=context.cache,
                            fetcher=context.fetcher)
        plan = plan_kernel(KernelOptions(arch=args.arch), context.versions, context.cache.root / TOOL_VERSIONS)
        # The source tree stays in use (never pruned) until the benchmark ends.
        tree = in_use.enter_context(prepare_source(plan.source, context.cache, context.fetcher)).tree

        seconds, cpu, cold = timed_build(context, KernelOptions(arch=args.arch, jobs=args.jobs, use_cache=False,
                                                                output_dir=work / "osbuilder"))
        results["osbuilder_cold_s"], results["osbuilder_cold_cpu_s"] = round(seconds, 1), round(cpu, 1)
        seconds, cpu = plain_make(tree, cold.config, work / "plain", args.arch, args.jobs)
        results["plain_make_s"], results["plain_make_cpu_s"] = round(seconds, 1), round(cpu, 1)
        results["overhead_ratio"] = round(results["osbuilder_cold_s"] / results["plain_make_s"], 3)
        results["overhead_ratio_cpu"] = round(results["osbuilder_cold_cpu_s"] / results["plain_make_cpu_s"], 3)
        results["vmlinux_bytes"] = cold.vmlinux.stat().st_size
        results["vmlinuz_bytes"] = cold.vmlinuz.stat().st_size
        images = {"cold": (digest(cold.vmlinux), digest(cold.vmlinuz))}
        shutil.rmtree(work / "plain")

        if not args.skip_ccache:
            ccache_dir = work / "ccache"
            for label in ("ccache_cold", "ccache_warm"):
                seconds, cpu, build = timed_build(context, KernelOptions(
                    arch=args.arch, jobs=args.jobs, use_cache=False, ccache=True, ccache_dir=ccache_dir,
                    output_dir=work / label))
                results[f"{label}_s"], results[f"{label}_cpu_s"] = round(seconds, 1), round(cpu, 1)
                images[label] = (digest(build.vmlinux), digest(build.vmlinuz))
            results["ccache_warm_over_cold"] = round(results["ccache_warm_s"] / results["ccache_cold_s"], 3)
            stats = subprocess.run(["ccache", "-s"], env={**os.environ, "CCACHE_DIR": str(ccache_dir)},
                                   capture_output=True, text=True).stdout
            results["ccache_stats"] = [line.strip() for line in stats.splitlines() if line.strip()][:12]
        results["images_identical_across_builds"] = len(set(images.values())) == 1
        results["load_after"] = load()
    finally:
        in_use.close()
        shutil.rmtree(work, ignore_errors=True)

    print(f"kernel benchmark ({args.arch}, make -j{args.jobs}; load average before {results['load_before']}, "
          f"after {results.get('load_after')})")
    print(f"  osbuilder cold build      {results['osbuilder_cold_s']:8.1f} s wall {results['osbuilder_cold_cpu_s']:8.1f} s CPU")
    print(f"  plain make, same .config  {results['plain_make_s']:8.1f} s wall {results['plain_make_cpu_s']:8.1f} s CPU")
    print(f"  ratio osbuilder / make    {results['overhead_ratio']:8.3f} wall {results['overhead_ratio_cpu']:8.3f} CPU"
          "   (target <= 1.05)")
    print(f"  vmlinux {results['vmlinux_bytes']} bytes, vmlinuz {results['vmlinuz_bytes']} bytes")
    if "ccache_cold_s" in results:
        print(f"  ccache cold               {results['ccache_cold_s']:8.1f} s wall {results['ccache_cold_cpu_s']:8.1f} s CPU")
        print(f"  ccache warm               {results['ccache_warm_s']:8.1f} s wall {results['ccache_warm_cpu_s']:8.1f} s CPU")
        print(f"  ratio warm / cold         {results['ccache_warm_over_cold']:8.3f} wall")
    print(f"  identical images across the osbuilder builds: {results['images_identical_across_builds']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
