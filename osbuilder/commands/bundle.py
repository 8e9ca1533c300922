"""osbuilder bundle: the kata-static release tarball, with the runtime that matches the agent."""

from __future__ import annotations

import argparse
from pathlib import Path

from osbuilder import options
from osbuilder.arch import host_arch, parse_arch
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.errors import UsageError
from osbuilder.evidence.options import SIGNING
from osbuilder.metadata import commit_epoch
from osbuilder.outputs import check_output_path
from osbuilder.tree import environment_epoch, parse_epoch

EPILOG = """\
The runtime comes from versions.yaml (assets.runtime: URL and sha256 of a kata-static release) or
from --runtime (a kata-static tarball, a directory laid out like /opt/kata, or a shim binary). Its
version (from `containerd-shim-kata-v2 --version`, or --runtime-version) must equal the agent
version recorded in every guest asset; a mismatch is refused.

Timestamps are clamped to --source-date-epoch, else $SOURCE_DATE_EPOCH, else the commit time of
this checkout, so a rebuild from the same inputs gives the same bytes.

--from-cache assembles the release from the cache entries of its parts instead of files: the
default kernel, image, measured image and initrd of `osbuilder matrix`, found by their keys in the
local cache or pulled from --remote-cache; a part found in neither is an error naming the command
that builds it. The bundle is itself a cache entry, keyed by its parts' keys, its code, the runtime
(digest and recorded source), versions.yaml, zstd and the epoch (cache_key in --json).

examples:
  osbuilder bundle --kernel-dir build/kernel --image build/kata-containers.img \\
      --initrd build/kata-containers-initrd.img --measured-image build/kata-containers-measured.img \\
      --measured-root-hash build/root_hash_measured.txt --runtime ./kata-static-4.1.0-amd64.tar.zst -o build/
  osbuilder --remote-cache oci://ghcr.io/owner/osbuilder-cache bundle --from-cache -o build/
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from-cache", action="store_true",
                        help="take the parts from the cache by their keys (local, else --remote-cache), not from files")
    parser.add_argument("--kernel-dir", type=Path, metavar="DIR",
                        help="output directory of osbuilder build-kernel (vmlinux-*, vmlinuz-*, .container links)")
    parser.add_argument("--image", type=Path, help="the rootfs image (systemd)")
    parser.add_argument("--initrd", type=Path, help="the initrd (the agent is init)")
    parser.add_argument("--measured-image", type=Path, metavar="IMAGE", help="the measured (dm-verity) image")
    parser.add_argument("--measured-root-hash", type=Path, metavar="FILE",
                        help="its root hash record (root_hash*.txt written next to it)")
    parser.add_argument("--runtime", type=Path, metavar="PATH",
                        help="local runtime instead of versions.yaml's download")
    parser.add_argument("--runtime-version", metavar="VERSION",
                        help="the runtime's version when it cannot be run here to ask it")
    parser.add_argument("--arch", help="architecture (default: the host's)")
    parser.add_argument("--source-date-epoch", metavar="SECONDS", help="clamp every timestamp to this time")
    parser.add_argument("-o", "--output", type=Path, default=Path("."), metavar="PATH",
                        help="the tarball, or a directory for kata-static-<version>-<arch>.tar.zst (default: .)")


def _epoch(value: str | None) -> int:
    if value is not None:
        return parse_epoch(value, "--source-date-epoch")
    env = environment_epoch()
    if env is not None:
        return env
    return commit_epoch() or 0


def run(context: Context, args: argparse.Namespace) -> Outcome:
    arch = parse_arch(args.arch) if args.arch else host_arch()
    if args.from_cache:
        given = [flag for flag, value in (("--kernel-dir", args.kernel_dir), ("--image", args.image),
                                          ("--initrd", args.initrd), ("--measured-image", args.measured_image),
                                          ("--measured-root-hash", args.measured_root_hash)) if value is not None]
        if given:
            raise UsageError(problem=f"{', '.join(given)} name files; --from-cache takes the parts from the cache",
                             where=given[0], fix="drop them, or drop --from-cache")
        from osbuilder.bundle.fromcache import bundle_from_cache

        data = bundle_from_cache(context, arch, args.output, args.runtime, args.runtime_version,
                                 _epoch(args.source_date_epoch))
        return Outcome(data, f"{data['bundle']}: Kata {data['version']} for {arch.name}, sha256 {data['sha256']} "
                             f"({data['cache']}; parts: "
                             + ", ".join(f"{part} {info['cache']}" for part, info in data["parts"].items()) + ")")
    missing = [flag for flag, value in (("--kernel-dir", args.kernel_dir), ("--image", args.image),
                                        ("--initrd", args.initrd)) if value is None]
    if missing:
        raise UsageError(problem=f"{', '.join(missing)} missing", where=missing[0],
                         fix="give the kernel directory, the image and the initrd, or --from-cache")
    if not args.kernel_dir.is_dir():
        raise UsageError(problem="no such directory", where=f"--kernel-dir {args.kernel_dir}",
                         fix="build the kernel first: osbuilder build-kernel -o DIR (make kernel)")
    if (args.measured_image is None) != (args.measured_root_hash is None):
        raise UsageError(problem="--measured-image and --measured-root-hash go together",
                         where="--measured-image", fix="give both, or neither")
    epoch = _epoch(args.source_date_epoch)
    sign_key = options.values(args, SIGNING)["sign_key"]
    if sign_key is not None:
        from osbuilder.evidence.provenance import check_sign_key

        check_sign_key(sign_key)
    # Imported here (jinja2, libarchive): every osbuilder command starts faster.
    from osbuilder.bundle.builder import BundleInputs, build_bundle
    from osbuilder.bundle.runtime import acquire_runtime

    runtime = acquire_runtime(context.versions, context.fetcher, arch.name, args.runtime, args.runtime_version)
    output = args.output
    if output.is_dir():
        output = output / f"kata-static-{runtime.version}-{arch.debian}.tar.zst"
    output = check_output_path(output)
    inputs = BundleInputs(arch=arch, kernel_dir=args.kernel_dir, image=args.image, initrd=args.initrd,
                          measured_image=args.measured_image, measured_root_hash=args.measured_root_hash,
                          runtime=runtime, source_date_epoch=epoch, versions_file=context.versions_path,
                          sign_key=sign_key)
    result = build_bundle(inputs, output)
    text = (f"{result.path}: Kata {result.version} for {arch.name}, {len(result.files)} files, "
            f"sha256 {result.sha256}\n  runtime {runtime.version} from {runtime.source}; built in "
            f"{result.duration:.1f} s\n  provenance: {result.provenance}")
    return Outcome(result.to_json(), text)


COMMAND = Command("bundle", "assemble the kata-static release tarball: assets, runtime configuration, runtime",
                  configure, run, order=70, epilog=EPILOG, options=(SIGNING,))
