#!/usr/bin/env python3
"""arm64 from this x86_64 host against x86_64, in the same run.

1. Rootfs: Debian bookworm with the agent as init, for aarch64 (mmdebstrap through qemu-user, the
   agent cross-built) against the same request for x86_64 (the baseline). Both use one private
   cache whose package cache an untimed first build filled, so the figures are bootstrap,
   provisioning and caching (`--no-cache`, what a changed option costs) and a cache hit (`warm`),
   not downloads. Runs alternate between the architectures round by round.
2. Agent ready under TCG: `osbuilder boot` of the aarch64 image (virtio-blk) and initrd with the
   arm64 kernel, against the x86_64 image (virtio-blk too, so the root device is the same kind)
   and initrd of the same recipe with the default x86_64 kernel; seconds from QEMU's start to the
   agent's SERVING answer, median of N boots each.

    python benchmarks/arm64.py [--rounds 2] [--boots 3]     # as root (mmdebstrap root mode)

Kernels come from the user's cache (built on the first run: the arm64 cross build takes about
15 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

from osbuilder.context import Context  # noqa: E402
from osbuilder.image.builder import ImageOptions, build_image  # noqa: E402
from osbuilder.initrd.builder import InitrdOptions, build_initrd  # noqa: E402
from osbuilder.kernel.build import KernelOptions, build_kernel  # noqa: E402
from osbuilder.paths import DEFAULT_DISTROS_DIR, DEFAULT_VERSIONS, default_cache_dir  # noqa: E402

SOURCE_DATE_EPOCH = "1700000000"
ARCHES = ("x86_64", "aarch64")  # the baseline first
REQUEST = ("--distro", "debian", "--os-version", "bookworm", "--agent-init")


def _osbuilder(*args: str) -> tuple[float, dict[str, Any]]:
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "OSBUILDER_NO_PROGRESS": "1"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "osbuilder", *args, "--json"], cwd=REPO, env=env,
                            capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if not result.stdout:
        raise SystemExit(f"osbuilder {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(result.stdout)
    if result.returncode != 0 or report.get("ok") is False:
        raise SystemExit(f"osbuilder {' '.join(args)} failed: {report.get('error')}\n{result.stderr[-3000:]}")
    return elapsed, report


def rootfs_times(work: Path, rounds: int, log: list[str]) -> dict[str, Any]:
    cache = work / "cache"
    trees: dict[str, Path] = {}
    first: dict[str, float] = {}
    for arch in ARCHES:  # untimed for the comparison: fills the package cache, builds the agent
        trees[arch] = work / f"rootfs-{arch}"
        first[arch], _ = _osbuilder("--cache-dir", str(cache), "build-rootfs", *REQUEST, "--arch", arch,
                                    "-o", str(trees[arch]))
        log.append(f"first build {arch}: {first[arch]:.1f} s (downloads included)")
    times: dict[str, dict[str, list[float]]] = {arch: {"no-cache": [], "warm": []} for arch in ARCHES}
    phases: dict[str, list[dict[str, float]]] = {arch: [] for arch in ARCHES}
    for number in range(rounds):
        order = ARCHES if number % 2 == 0 else tuple(reversed(ARCHES))
        for arch in order:
            for variant, extra in (("no-cache", ["--no-cache"]), ("warm", [])):
                os.sync()
                output = work / f"round-{number}-{arch}-{variant}"
                elapsed, report = _osbuilder("--cache-dir", str(cache), "build-rootfs", *REQUEST, "--arch", arch,
                                             *extra, "-o", str(output))
                assert report["cache_hit"] is (variant == "warm"), report
                times[arch][variant].append(elapsed)
                if variant == "no-cache":
                    phases[arch].append(report.get("timings", {}))
                log.append(f"round {number + 1}: {arch:<8} {variant:<9} {elapsed:7.2f} s")
    median = {arch: {variant: statistics.median(values) for variant, values in by.items()}
              for arch, by in times.items()}
    return {
        "first_build_seconds": first,
        "seconds": times,
        "median_seconds": {arch: {k: round(v, 2) for k, v in by.items()} for arch, by in median.items()},
        "ratio_aarch64_to_x86_64": {variant: round(median["aarch64"][variant] / median["x86_64"][variant], 2)
                                    for variant in ("no-cache", "warm")},
        "phases_no_cache": phases,
        "trees": {arch: str(path) for arch, path in trees.items()},
    }


def _kernel(arch: str, given: Path | None, work: Path) -> Path:
    if given is not None:
        return given
    context = Context(versions_path=DEFAULT_VERSIONS, distros_dir=DEFAULT_DISTROS_DIR, cache_dir=default_cache_dir())
    return build_kernel(KernelOptions(arch=arch, output_dir=work / f"kernel-{arch}"), versions=context.versions,
                        cache=context.cache, fetcher=context.fetcher).vmlinux


def agent_ready(work: Path, trees: dict[str, Path], boots: int, kernels: dict[str, Path | None],
                log: list[str]) -> dict[str, Any]:
    samples: dict[str, list[float]] = {}
    for arch in ARCHES:
        kernel = _kernel(arch, kernels.get(arch), work)
        image = build_image(trees[arch], ImageOptions(output=work / f"{arch}.img", agent_init=True)).path
        initrd = build_initrd(trees[arch], InitrdOptions(output=work / f"{arch}-initrd.img", agent_init=True)).path
        # virtio-blk on both: the x86_64 NVDIMM would compare another root device
        for kind, asset in (("image", ["--image", str(image), "--no-dax"]), ("initrd", ["--initrd", str(initrd)])):
            name = f"{arch}-{kind}"
            samples[name] = []
            for _ in range(boots):
                _, report = _osbuilder("boot", "--arch", arch, "--accel", "tcg", "--transport", "serial",
                                       "--timeout", "600", "--kernel", str(kernel), *asset)
                samples[name].append(float(report["timings"]["agent_ready"]))
            log.append(f"agent ready {name:<16} median {statistics.median(samples[name]):6.2f} s  "
                       + ", ".join(f"{value:.2f}" for value in samples[name]))
    median = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "seconds_from_qemu_start": samples,
        "median_seconds": {name: round(value, 2) for name, value in median.items()},
        "ratio_aarch64_to_x86_64": {kind: round(median[f"aarch64-{kind}"] / median[f"x86_64-{kind}"], 2)
                                    for kind in ("image", "initrd")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="rootfs rounds per architecture (default 2)")
    parser.add_argument("--boots", type=int, default=3, help="boots per asset (default 3)")
    parser.add_argument("--skip-boot", action="store_true", help="only the rootfs comparison")
    parser.add_argument("--rootfs", nargs=2, type=Path, metavar=("X86_64", "AARCH64"),
                        help="boot these agent-init trees instead of building them (skips the rootfs comparison)")
    for arch in ARCHES:
        parser.add_argument(f"--kernel-{arch}", type=Path, metavar="PATH",
                            help=f"the {arch} kernel to boot (default: build_kernel, from the user's cache)")
    args = parser.parse_args()
    if platform.machine() != "x86_64":
        raise SystemExit("this benchmark compares aarch64 built on an x86_64 host with x86_64")
    work = Path(tempfile.mkdtemp(prefix="osbuilder-bench-arm64-"))
    log: list[str] = []
    try:
        if args.rootfs:
            rootfs, trees = None, dict(zip(ARCHES, args.rootfs, strict=True))
        else:
            rootfs = rootfs_times(work, args.rounds, log)
            trees = {arch: Path(path) for arch, path in rootfs.pop("trees").items()}
        kernels = {arch: getattr(args, f"kernel_{arch}") for arch in ARCHES}
        boot = None if args.skip_boot else agent_ready(work, trees, args.boots, kernels, log)
        for line in log:
            print(line, file=sys.stderr)
        print(json.dumps({"benchmark": "arm64", "host": {"machine": platform.machine(), "cpus": os.cpu_count()},
                          "rootfs": rootfs, "agent_ready_tcg": boot}, indent=2))
        return 0
    finally:
        remove_work(work)


if __name__ == "__main__":
    sys.exit(main())
