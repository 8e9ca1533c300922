"""`osbuilder run` against a host `runc run` of the same OCI bundle, in the same run: for each kind of
asset (DAX image with systemd, DAX image with the agent as init, initrd), the seconds from
CreateContainer to the workload's exit (from `--json` timings) and the whole command's wall time,
median of N runs each (TCG, virtio-serial, virtio-fs).

    python benchmarks/run.py [--runs 5]          # as root (mounts, virtiofsd, runc)

Assets come from the pipeline with the user's cache, as in benchmarks/boot.py; the container root is
the architecture's example, Ubuntu noble from `osbuilder build-rootfs --container` (the one the tests
use).
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
import uuid
from pathlib import Path

from _common import REPO, SOURCE_DATE_EPOCH, arguments
from boot import rootfs

from osbuilder.context import Context
from osbuilder.image.builder import ImageOptions, build_image
from osbuilder.initrd.builder import InitrdOptions, build_initrd
from osbuilder.kernel.build import KernelOptions, build_kernel
from osbuilder.paths import DEFAULT_DISTROS_DIR, DEFAULT_VERSIONS, default_cache_dir

WORKLOAD = ["sh", "-c", "echo hello from the container; cat /etc/os-release"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(runs=5)


def oci_bundle(work: Path, root: Path) -> Path:
    bundle = work / "bundle"
    bundle.mkdir()
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"].update(terminal=False, args=WORKLOAD)
    spec["root"]["path"] = str(root)
    (bundle / "config.json").write_text(json.dumps(spec, indent=1))
    return bundle


def runc_once(bundle: Path) -> float:
    name = f"osb-bench-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    result = subprocess.run(["runc", "run", "--bundle", str(bundle), name], capture_output=True,
                            stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    subprocess.run(["runc", "delete", "--force", name], capture_output=True)
    if not result.stdout.startswith(b"hello from the container"):  # the workload ran (its status may be 1)
        raise SystemExit(f"runc run failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    return elapsed


def osbuilder_once(kernel: Path, asset: list[str], bundle: Path) -> tuple[float, float]:
    """(CreateContainer to exit, wall time) of one `osbuilder run`."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "osbuilder", "run", "--json", "--transport", "serial", "--accel",
                             "tcg", "--kernel", str(kernel), *asset, "--oci-bundle", str(bundle)], cwd=REPO,
                            capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if not result.stdout:
        raise SystemExit(f"osbuilder run failed ({result.returncode}):\n{result.stderr}")
    report = json.loads(result.stdout)
    if not report["ok"]:
        raise SystemExit(f"osbuilder run failed: {report['error']}\n" + "\n".join(report["console_tail"]))
    timings = report["timings"]
    return timings["exited"] - timings["create_container"], elapsed


def main() -> int:
    args = arguments(__doc__, configure)
    if os.geteuid() != 0 or shutil.which("runc") is None:
        raise SystemExit("run as root, with runc installed (make deps)")
    context = Context(versions_path=DEFAULT_VERSIONS, distros_dir=DEFAULT_DISTROS_DIR, cache_dir=default_cache_dir())
    kernel = build_kernel(KernelOptions(), versions=context.versions, cache=context.cache,
                          fetcher=context.fetcher).vmlinux
    with tempfile.TemporaryDirectory(prefix="osbuilder-bench-run-", dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        work = Path(tmp)
        noble = rootfs(work, "noble", "--distro", "ubuntu", "--os-version", "noble")
        bookworm = rootfs(work, "bookworm", "--distro", "debian", "--os-version", "bookworm", "--agent-init")
        container = rootfs(work, "container", "--distro", "ubuntu", "--os-version", "noble", "--container")
        epoch = SOURCE_DATE_EPOCH
        systemd = build_image(noble, ImageOptions(output=work / "systemd.img", source_date_epoch=epoch))
        agent = build_image(bookworm, ImageOptions(output=work / "agent.img", agent_init=True, source_date_epoch=epoch))
        initrd = build_initrd(bookworm, InitrdOptions(output=work / "agent.initrd", agent_init=True,
                                                      source_date_epoch=epoch))
        bundle = oci_bundle(work, container)
        kinds = {"image, systemd (DAX)": ["--image", str(systemd.path)],
                 "image, agent as init (DAX)": ["--image", str(agent.path)],
                 "initrd, agent as init": ["--initrd", str(initrd.path)]}
        baseline = statistics.median(runc_once(bundle) for _ in range(args.runs))
        per_kind: dict[str, dict[str, float]] = {}
        print(f"host runc run of the same bundle: {baseline:.3f} s (median of {args.runs})\n")
        print(f"{'asset':<30} {'create->exit':>13} {'ratio':>8} {'whole run':>10} {'ratio':>8}")
        for name, asset in kinds.items():
            samples = [osbuilder_once(kernel, asset, bundle) for _ in range(args.runs)]
            inside = statistics.median(sample[0] for sample in samples)
            whole = statistics.median(sample[1] for sample in samples)
            print(f"{name:<30} {inside:12.3f}s {inside / baseline:7.1f}x {whole:9.2f}s {whole / baseline:7.1f}x")
            per_kind[name] = {"create_to_exit_s": round(inside, 3), "wall_s": round(whole, 3),
                              "create_to_exit_ratio": round(inside / baseline, 2), "wall_ratio": round(whole / baseline, 2)}
    print("\n" + json.dumps({"runs": args.runs, "runc_run_s": round(baseline, 3), "kinds": per_kind}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
