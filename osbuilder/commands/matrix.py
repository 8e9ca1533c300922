"""osbuilder matrix: the release variants (architecture x asset x variant) for a CI matrix.

Each variant carries a content key: a digest of everything that determines its output (the pins in
versions.yaml that it uses, the recipe, the kernel fragments, the agent sources, the osbuilder code
that builds it, its options). A CI pipeline restores and saves its cache by that key, so an
unchanged variant is never rebuilt; `make` builds it and the bundle job gathers the outputs.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from osbuilder.agent_build import NOT_SOURCES
from osbuilder.arch import ARCHES
from osbuilder.cache import content_key, sha256_file, sha256_tree
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.paths import AGENT_SOURCE_DIR, KERNEL_CONFIGS_DIR, REPO_ROOT

PACKAGE_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Variant:
    id: str
    arch: str
    asset: str  # kernel | image | initrd | bundle
    variant: str
    key: str
    make: str  # the command that builds it in a checkout
    outputs: list[str]
    needs: list[str]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", action="append", choices=list(ARCHES),
                        help="only these architectures (repeatable; default: every one)")


def _code(*parts: str) -> str:
    """Digest of the osbuilder modules a step runs (any change to them changes the key)."""
    return content_key({part: sha256_tree(PACKAGE_DIR / part) if (PACKAGE_DIR / part).is_dir()
                        else sha256_file(PACKAGE_DIR / part) for part in parts})


def variants(context: Context, arches: list[str]) -> list[Variant]:
    versions = context.versions
    kernel_pin = versions.lookup("assets.kernel")
    common = {"versions_agent": versions.agent_version, "core": _code("cache.py", "fetch.py", "runner.py")}
    kernel_inputs = {**common, "pin": kernel_pin, "fragments": sha256_tree(KERNEL_CONFIGS_DIR),
                     "code": _code("kernel")}
    agent = sha256_tree(AGENT_SOURCE_DIR, NOT_SOURCES)
    rootfs_code = _code("rootfs.py", "provision.py", "bootstrap.py", "metadata.py", "rootfs_tree.py", "templates")
    result: list[Variant] = []
    for arch in arches:
        kernel_variants = [("default", ""), ("debug", "--debug")]
        if arch == "x86_64":
            kernel_variants.append(("confidential", "--confidential"))
        for name, flag in kernel_variants:
            out = f"build/{arch}/kernel" + ("" if name == "default" else f"-{name}")
            result.append(Variant(
                f"kernel-{arch}-{name}", arch, "kernel", name,
                content_key({"asset": "kernel", "arch": arch, "variant": name, **kernel_inputs}),
                f"make kernel ARCH={arch} KERNEL_DIR={out}" + (f' KERNEL_FLAGS="{flag}"' if flag else ""),
                [out], []))
        for asset in ("image", "initrd"):
            pin = versions.distro_pin(asset, arch)
            recipe = context.recipe(pin.distro)
            inputs = {**common, "asset": asset, "arch": arch, "pin": asdict(pin),
                      "recipe": sha256_file(recipe.path), "agent": agent, "rootfs_code": rootfs_code,
                      "builder": _code(asset)}
            image_variants = [("default", "")] + ([("measured", "MEASURED_ROOTFS=yes BUILD_VARIANT=measured")]
                                                  if asset == "image" else [])
            for name, knobs in image_variants:
                suffix = "" if name == "default" else f"-{name}"
                out = (f"build/{arch}/kata-containers{suffix}.img" if asset == "image"
                       else f"build/{arch}/kata-containers-initrd.img")
                target = "IMAGE" if asset == "image" else "INITRD"
                result.append(Variant(
                    f"{asset}-{arch}-{name}", arch, asset, name, content_key({**inputs, "variant": name}),
                    f"make {asset} ARCH={arch} {target}={out} {knobs}".strip(),
                    [out] + ([f"build/{arch}/root_hash_measured.txt"] if name == "measured" else []), []))
        parts = [variant for variant in result if variant.arch == arch and variant.variant in ("default", "measured")]
        result.append(Variant(
            f"bundle-{arch}", arch, "bundle", "default",
            content_key({"parts": [variant.key for variant in parts], "code": _code("bundle"),
                         "runtime": versions.lookup("assets.runtime")}),
            f"make bundle-only ARCH={arch} BUILD_DIR=build/{arch}", [f"build/{arch}/kata-static-*.tar.zst"],
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
