"""osbuilder matrix: the release variants (architecture x asset x variant) for a CI matrix.

Each variant carries the key its local build has: the kernel's and the rootfs's cache keys come
from the same planners the builds run (osbuilder.kernel.build.plan_kernel, osbuilder.rootfs.plan),
with the environment make gives them (SOURCE_DATE_EPOCH: the checkout's commit time unless set, the
kernel excepted); an image's and an initrd's content key from their options and their rootfs's key;
the bundle's from its parts, its code, the pinned runtime, versions.yaml, zstd and SOURCE_DATE_EPOCH.
Each variant names the make target and the osbuilder command that build it (`command`: with
--remote-cache, a build job pushes what it built), and `osbuilder bundle --from-cache` assembles
the release from the parts' entries by these keys, locally or from the remote cache. Planning asks
the host's tools for their versions (gcc, the cross compiler, mmdebstrap, musl-gcc, strip, the mkfs
tools, zstd): run it where the builders' toolchain is (`make deps`), or a missing tool is reported.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass
from typing import Any

from osbuilder import codegraph
from osbuilder.arch import ARCHES
from osbuilder.cache import content_key, sha256_file
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.options import make_environment
from osbuilder.paths import REPO_ROOT
from osbuilder.runner import TOOL_VERSIONS, tool_version
from osbuilder.tree import environment_epoch

BUNDLE_MODULE = "osbuilder.bundle.builder"


@dataclass(frozen=True)
class Variant:
    id: str
    arch: str
    asset: str  # kernel | image | initrd | bundle
    variant: str
    key: str
    make: str  # the make target that builds it in a checkout
    command: str  # the osbuilder command that builds it (what make runs)
    outputs: list[str]
    needs: list[str]


@dataclass(frozen=True)
class BundleRuntime:
    version: str
    sha256: str | None
    recorded: str | None  # the source the bundle records (osbuilder.bundle.runtime.recorded_source)


def bundle_inputs(context: Context, parts: list[str], runtime: BundleRuntime, epoch: int | None) -> dict[str, Any]:
    """What a bundle's key is the digest of: everything its bytes depend on besides its parts (their
    keys): its code, the runtime, versions.yaml (shipped whole), the compressor, the epoch."""
    return {"parts": parts, "code": codegraph.code_digest(BUNDLE_MODULE),
            "runtime": {"version": runtime.version, "sha256": runtime.sha256, "source": runtime.recorded},
            "versions_yaml": sha256_file(context.versions_path),
            "zstd": tool_version("zstd", context.cache.root / TOOL_VERSIONS, "compress the bundle"),
            "source_date_epoch": epoch}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", action="append", choices=list(ARCHES),
                        help="only these architectures (repeatable; default: every one)")


def variants(context: Context, arches: list[str]) -> list[Variant]:
    # The builders are imported by the command that plans with them, not for every command's --help.
    from osbuilder.image.builder import ImageOptions
    from osbuilder.initrd.builder import InitrdOptions
    from osbuilder.kernel.build import KernelOptions, plan_kernel
    from osbuilder.rootfs.plan import Request, is_agent_init, plan

    versions = context.versions
    memo = context.cache.root / TOOL_VERSIONS
    made = make_environment(os.environ)  # what `make image|initrd` gives osbuilder
    result: list[Variant] = []
    for arch in arches:
        kernel_variants = [("default", ""), ("debug", "--debug")]
        if arch == "x86_64":
            kernel_variants.append(("confidential", "--confidential"))
        for name, flag in kernel_variants:
            options = KernelOptions(arch=arch, debug=name == "debug", confidential=name == "confidential")
            out = f"build/{arch}/kernel" + ("" if name == "default" else f"-{name}")
            result.append(Variant(
                f"kernel-{arch}-{name}", arch, "kernel", name, plan_kernel(options, versions, memo).cache_key,
                f"make kernel ARCH={arch} KERNEL_DIR={out}" + (f' KERNEL_FLAGS="{flag}"' if flag else ""),
                f"osbuilder build-kernel --arch {arch} -o {out}" + (f" {flag}" if flag else ""), [out], []))
        for asset in ("image", "initrd"):
            rootfs = plan(Request(arch=arch), versions, context.recipe, context.cache.root, asset, made,
                          key_only=True)
            image_variants = [("default", "", "")] + ([("measured", "MEASURED_ROOTFS=yes BUILD_VARIANT=measured",
                                                          "--measured --variant measured")]
                                                        if asset == "image" else [])
            for name, knobs, flags in image_variants:
                if asset == "image":
                    key = ImageOptions(measured=name == "measured", seed=rootfs.cache_key).content_key(made)
                else:
                    key = InitrdOptions(agent_init=is_agent_init(rootfs)).content_key(rootfs.cache_key, made)
                suffix = "" if name == "default" else f"-{name}"
                out = (f"build/{arch}/kata-containers{suffix}.img" if asset == "image"
                       else f"build/{arch}/kata-containers-initrd.img")
                target = "IMAGE" if asset == "image" else "INITRD"
                result.append(Variant(
                    f"{asset}-{arch}-{name}", arch, asset, name, key,
                    f"make {asset} ARCH={arch} {target}={out} {knobs}".strip(),
                    f"osbuilder build-{asset} --make-variables --arch {arch} -o {out} {flags}".strip(),
                    [out] + ([f"build/{arch}/root_hash_measured.txt"] if name == "measured" else []), []))
        parts = [variant for variant in result if variant.arch == arch and variant.variant in ("default", "measured")]
        runtime = versions.assets.runtime
        download = next((entry for entry in runtime.architecture if entry.arch == arch), None)
        result.append(Variant(
            f"bundle-{arch}", arch, "bundle", "default",
            content_key(bundle_inputs(context, [variant.key for variant in parts], BundleRuntime(
                runtime.version, download.sha256 if download else None, download.url if download else None),
                environment_epoch(made))),
            f"make bundle-only ARCH={arch} BUILD_DIR=build/{arch}",
            f"osbuilder bundle --from-cache --arch {arch} -o build/{arch}", [f"build/{arch}/kata-static-*.tar.zst"],
            [variant.id for variant in parts]))
    return result


def run(context: Context, args: argparse.Namespace) -> Outcome:
    arches = args.arch or list(ARCHES)
    found = variants(context, arches)
    data: dict[str, Any] = {"repository": str(REPO_ROOT), "include": [asdict(variant) for variant in found]}
    lines = [f"{'ID':<28} {'KEY':<16} MAKE"]
    lines += [f"{variant.id:<28} {variant.key[:16]} {variant.make}" for variant in found]
    return Outcome(data, "\n".join(lines))


COMMAND = Command("matrix", "list the release variants (arch x asset x variant) with content keys for CI",
                  configure, run, order=80)
