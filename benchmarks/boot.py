"""Time to agent-ready for each boot-matrix entry (median of N boots under TCG), the agent's size,
the initrd against the image, and a zstd initrd against a gzip one — all in the same run.

    python benchmarks/boot.py [--runs 5]

Assets come from the pipeline with the user's cache: the default kernel, the Ubuntu noble systemd
rootfs and the Debian bookworm agent-as-init rootfs (cache hits after the first run), and the
minimal recipe; images and initrds are built here. Timings are seconds from QEMU's start, as
`osbuilder boot` reports them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from _common import REPO, SOURCE_DATE_EPOCH, arguments, mib

from osbuilder.agent_build import reference_agent
from osbuilder.arch import host_arch
from osbuilder.boot.check import CheckOptions, boot_check
from osbuilder.boot.qemu import VmSpec
from osbuilder.context import Context
from osbuilder.image.builder import ImageOptions, build_image
from osbuilder.initrd.builder import InitrdOptions, build_initrd
from osbuilder.kernel.build import KernelOptions, build_kernel
from osbuilder.kernelcmdline import RootSpec, VerityLine, kernel_params
from osbuilder.paths import DEFAULT_DISTROS_DIR, DEFAULT_VERSIONS, default_cache_dir


@dataclass(frozen=True)
class Entry:
    name: str
    image: Path | None = None
    initrd: Path | None = None
    nvdimm: bool = True
    verity: VerityLine | None = None


def rootfs(work: Path, name: str, *args: str) -> Path:
    output = work / name
    subprocess.run([sys.executable, "-m", "osbuilder", "build-rootfs", *args, "-o", str(output)], cwd=REPO,
                   check=True, env={**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH)},
                   stdout=subprocess.DEVNULL)
    return output


def boot_once(kernel: Path, entry: Entry) -> dict[str, float]:
    kind = "image" if entry.image is not None else "initrd"
    root = RootSpec(kind, "ext4", entry.nvdimm, entry.verity)
    spec = VmSpec(arch=host_arch(), kernel=kernel, cmdline=kernel_params(root), accel="tcg", image=entry.image,
                  initrd=entry.initrd, nvdimm=entry.nvdimm)
    report = boot_check(spec, CheckOptions(timeout=300, expect_dax=root.dax(spec.arch.name)))
    if not report.ok:
        raise SystemExit(f"{entry.name}: boot failed: {report.error}\n" + "\n".join(report.console_tail))
    return {key: value for key, value in report.timings.items() if value is not None}


def boot_all(kernel: Path, entries: list[Entry], runs: int) -> dict[str, dict[str, float]]:
    """Medians per entry. The entries take turns (run 1 of each, then run 2, ...), so that a change
    in the machine's load during the benchmark falls on every entry alike and the ratios hold."""
    samples: dict[str, dict[str, list[float]]] = {entry.name: {} for entry in entries}
    for _ in range(runs):
        for entry in entries:
            for key, value in boot_once(kernel, entry).items():
                samples[entry.name].setdefault(key, []).append(value)
    return {name: {key: statistics.median(values) for key, values in timings.items()}
            for name, timings in samples.items()}


def main() -> int:
    args = arguments(__doc__)
    context = Context(versions_path=DEFAULT_VERSIONS, distros_dir=DEFAULT_DISTROS_DIR, cache_dir=default_cache_dir())
    kernel = build_kernel(KernelOptions(), versions=context.versions, cache=context.cache,
                          fetcher=context.fetcher).vmlinux
    agent = reference_agent(context.versions.agent_version, context.cache)
    results: dict[str, object] = {"agent_bytes": agent.stat().st_size, "runs": args.runs}
    print(f"reference agent: {agent.stat().st_size} bytes (static, stripped)")
    with tempfile.TemporaryDirectory(prefix="osbuilder-bench-boot-", dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        work = Path(tmp)
        noble = rootfs(work, "noble", "--distro", "ubuntu", "--os-version", "noble")
        bookworm = rootfs(work, "bookworm", "--distro", "debian", "--os-version", "bookworm", "--agent-init")
        minimal = rootfs(work, "minimal", "--distro", "minimal")
        epoch = SOURCE_DATE_EPOCH
        systemd = build_image(noble, ImageOptions(output=work / "systemd.img", source_date_epoch=epoch))
        agent_image = build_image(bookworm, ImageOptions(output=work / "agent.img", agent_init=True,
                                                         source_date_epoch=epoch))
        measured = build_image(noble, ImageOptions(output=work / "measured.img", measured=True,
                                                   source_date_epoch=epoch))
        zstd = build_initrd(bookworm, InitrdOptions(output=work / "agent.zst", agent_init=True, source_date_epoch=epoch))
        gzip = build_initrd(bookworm, InitrdOptions(output=work / "agent.gz", agent_init=True, compression="gzip",
                                                    source_date_epoch=epoch))
        small = build_initrd(minimal, InitrdOptions(output=work / "minimal.zst", agent_init=True,
                                                    source_date_epoch=epoch))
        entries = [
            Entry("image + systemd (DAX)", image=systemd.path),
            Entry("image + agent-as-init (DAX)", image=agent_image.path),
            Entry("image over virtio-blk (agent-as-init)", image=agent_image.path, nvdimm=False),
            Entry("measured image + systemd (dm-verity)", image=measured.path, verity=measured.verity),
            Entry(f"initrd + agent-as-init, zstd ({mib(zstd.size)})", initrd=zstd.path),
            Entry(f"initrd + agent-as-init, gzip ({mib(gzip.size)})", initrd=gzip.path),
            Entry(f"initrd, minimal recipe ({small.size // 1024} KiB)", initrd=small.path),
        ]
        timings = boot_all(kernel, entries, args.runs)
        print(f"\n{'entry':<48} {'kernel':>7} {'root':>7} {'agent':>7} {'off':>7}   (median of {args.runs}, s)")
        for entry in entries:
            measured_timings = timings[entry.name]
            print(f"{entry.name:<48} " + " ".join(f"{measured_timings.get(key, float('nan')):7.2f}" for key in
                                                 ("kernel_started", "root_mounted", "agent_ready", "powered_off")))
        ready = {name: value["agent_ready"] for name, value in timings.items()}
        names = [entry.name for entry in entries]
        print(f"\nimage systemd / image agent-as-init (DAX), agent ready: {ready[names[0]] / ready[names[1]]:.2f}x "
              "(target: at most 2.5x)")
        print(f"initrd (zstd) / image (agent-as-init, DAX), agent ready: {ready[names[4]] / ready[names[1]]:.2f}x")
        print(f"zstd / gzip initrd, agent ready: {ready[names[4]] / ready[names[5]]:.2f}x; "
              f"size {zstd.size / gzip.size:.2f}x")
        results.update(timings=timings, sizes={"systemd_image": systemd.path.stat().st_size,
                                               "initrd_zstd": zstd.size, "initrd_gzip": gzip.size,
                                               "initrd_minimal": small.size})
    print("\n" + json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
