"""osbuilder build-kernel: the guest kernel from verified sources and checked config fragments."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.evidence.options import BUDGETS
from osbuilder.options import values as option_values
from osbuilder.paths import KERNEL_CONFIGS_DIR
from osbuilder.versions import KERNEL_SOURCE_KINDS

if TYPE_CHECKING:
    from osbuilder.kernel.build import KernelOptions

EPILOG = """\
Fragments are merged from kernel-configs/ (see its README.md): common, the architecture, the build
type, measured (on by default), confidential, debug, then --extra-fragment files, onto allnoconfig.
Every requested option must end with the requested value, or the build stops and lists each one with
its fragment file:line.

Outputs (Kata's names, in -o DIR): vmlinux-<version>-<config_version><suffix> (x86_64: the ELF;
arm64: Image), vmlinuz-... (bzImage / Image.gz), config-..., System.map-..., the .container links,
and kernel-<version>-<config_version><suffix>.json, the build record.

Exit status: 0 built (or found in the cache); 1 the build failed, or kconfig did not produce a
requested value (a misspelt or unsatisfiable option); 2 bad input found before anything ran (a
fragment's syntax, =m, an unknown tag, an option requested twice, a bad option or path).
"""


def configure(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("which kernel")
    what.add_argument("--version", metavar="V", help="kernel version (default and only pinned: versions.yaml's; "
                      "other versions need --source)")
    what.add_argument("--arch", metavar="ARCH", help="x86_64 or aarch64 (cross-built on x86_64); default: the host's")
    what.add_argument("--confidential", action="store_true",
                      help="confidential guest: TDX and SEV-SNP (x86_64 only); implies --measured")
    what.add_argument("--measured", action=argparse.BooleanOptionalAction, default=True,
                      help="dm-verity root and dm-mod.create (DM_INIT); on by default")
    what.add_argument("--debug", action="store_true", help="debug kernel (debug/ fragments, -debug suffix)")
    what.add_argument("--build-type", metavar="NAME", help="add build-type/NAME/ fragments and patches (-NAME suffix)")
    config = parser.add_argument_group("configuration")
    config.add_argument("--extra-fragment", action="append", type=Path, default=[], metavar="FILE",
                        help="another fragment, merged last and checked like the others (repeatable)")
    config.add_argument("--config", type=Path, metavar="FILE",
                        help="a whole .config instead of fragments (make olddefconfig; no fragment check)")
    config.add_argument("--configs-dir", type=Path, default=KERNEL_CONFIGS_DIR, metavar="DIR",
                        help="fragment directory (default: the repository's kernel-configs/)")
    config.add_argument("--config-only", action="store_true",
                        help="merge and check the configuration, write config-<name> to -o DIR, do not compile")
    source = parser.add_argument_group("source").add_mutually_exclusive_group()
    source.add_argument("--source", type=Path, metavar="PATH", help="a local kernel tree or release tarball")
    source.add_argument("--source-kind", choices=KERNEL_SOURCE_KINDS,
                        help="pinned source: debian (linux-source package, the default) or tarball (kernel.org)")
    parser.add_argument("--mirror", metavar="URL", help="Debian mirror for the debian source")
    build = parser.add_argument_group("build")
    build.add_argument("--ccache", action="store_true", help="compile through ccache (kept in the cache directory)")
    build.add_argument("-j", "--jobs", type=int, metavar="N", help="parallel jobs (default: the number of CPUs)")
    build.add_argument("--no-cache", action="store_true",
                       help="rebuild even if this kernel is cached, and do not store it (the source stays cached)")
    build.add_argument("--keep-build-dir", action="store_true",
                       help="keep the O= directory in the cache for incremental rebuilds")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="output directory")


def _options(args: argparse.Namespace) -> KernelOptions:
    from osbuilder.kernel.build import KernelOptions  # imported by the command that builds, not by every one

    return KernelOptions(
        arch=args.arch, version=args.version, confidential=args.confidential, measured=args.measured,
        debug=args.debug, build_type=args.build_type, extra_fragments=tuple(args.extra_fragment),
        full_config=args.config, source_path=args.source, source_kind=args.source_kind, mirror=args.mirror,
        ccache=args.ccache, jobs=args.jobs, use_cache=not args.no_cache, keep_build_dir=args.keep_build_dir,
        output_dir=args.output, configs_dir=args.configs_dir,
    )


def run(context: Context, args: argparse.Namespace) -> Outcome:
    from osbuilder.kernel.build import build_kernel, check_kernel_config

    options = _options(args)
    if args.config_only:
        check = check_kernel_config(options, versions=context.versions, cache=context.cache, fetcher=context.fetcher)
        lines = [f"configuration of {check.name} checked: {check.requested} options from "
                 f"{len(check.fragments)} fragments have their values ({check.duration:.1f} s)"]
        if check.skipped:
            lines.append(f"  excluded by tag: {', '.join(check.skipped)}")
        lines.extend(f"  warning: {warning}" for warning in check.warnings)
        lines.extend(f"  whitelisted: {mismatch.describe()}" for mismatch in check.whitelisted)
        if check.config:
            lines.append(f"  {check.config} (sha256 {check.config_sha256[:16]}...)")
        return Outcome(check.to_json(), "\n".join(lines))
    build = build_kernel(options, versions=context.versions, cache=context.cache, fetcher=context.fetcher,
                         verbose=context.verbose)
    state = "from the cache" if build.cache_hit else "built"
    lines = [f"kernel {build.name} ({build.arch}) {state} in {build.duration:.1f} s"]
    for path in (build.vmlinux, build.vmlinuz, build.config, build.system_map, build.record):
        lines.append(f"  {path} ({path.stat().st_size} bytes)")
    for link in (build.vmlinux_container, build.vmlinuz_container):
        if link is not None:
            lines.append(f"  {link} -> {link.readlink()}")
    lines.append(f"  config sha256 {build.config_sha256}")
    lines.extend(f"  warning: {warning}" for warning in build.warnings)
    if not option_values(args, BUDGETS)["no_budgets"]:
        from osbuilder.evidence.budgets import check_file

        check_file(context.versions, build.arch, "kernel", build.vmlinux)
    return Outcome(build.to_json(), "\n".join(lines))


COMMAND = Command("build-kernel", "build the guest kernel from checked config fragments and a verified source",
                  configure, run, order=30, epilog=EPILOG, options=(BUDGETS,))
