"""`osbuilder bundle --from-cache`: the release assembled only from cache entries found by key.

The parts are the bundle variant's `needs` in `osbuilder matrix` (the default kernel, image,
measured image and initrd of the architecture), planned by the same planners, so their keys are
the ones the build jobs of a pipeline made and pushed. Each is found in the local cache or pulled
from the remote cache (never built here: a missing part is an error naming the command that builds
it). The bundle is a cache entry of its own, keyed by the parts' keys and what else its bytes depend
on (commands.matrix.bundle_inputs): a fan-in job that finds it does nothing but copy it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from osbuilder.arch import Arch
from osbuilder.assetcache import (
    BUNDLE_KIND,
    ENTRY_IMAGE,
    ENTRY_INITRD,
    ENTRY_ROOT_HASH,
    deliver,
)
from osbuilder.bundle.builder import BundleInputs, build_bundle
from osbuilder.bundle.runtime import acquire_runtime
from osbuilder.cache import content_key
from osbuilder.commands.matrix import BundleRuntime, Variant, bundle_inputs, variants
from osbuilder.context import Context
from osbuilder.errors import BuildError
from osbuilder.evidence.provenance import UNSIGNED_SUFFIX
from osbuilder.outputs import check_output_path


def bundle_from_cache(context: Context, arch: Arch, output: Path, runtime_path: Path | None,
                      runtime_version: str | None, epoch: int) -> dict[str, Any]:
    planned = {variant.id: variant for variant in variants(context, [arch.name])}
    bundle = planned[f"bundle-{arch.name}"]
    parts = [planned[name] for name in bundle.needs]
    runtime = acquire_runtime(context.versions, context.fetcher, arch.name, runtime_path, runtime_version)
    # The release's own name, inside the entry too: the provenance names its subject by it.
    released = f"kata-static-{runtime.version}-{arch.debian}.tar.zst"
    if output.is_dir():
        output = output / released
    output = check_output_path(output)
    inputs = bundle_inputs(context, [part.key for part in parts], BundleRuntime(runtime.version, runtime.sha256,
                                                                              runtime.recorded), epoch)
    sources: dict[str, dict[str, Any]] = {}

    def build(staging: Path) -> dict[str, Any]:
        with contextlib.ExitStack() as in_use:
            entries: dict[str, Path] = {}
            missing: list[Variant] = []
            for part in parts:
                found = in_use.enter_context(context.cache.finding(part.asset, part.key))
                if found is None:
                    missing.append(part)
                    continue
                entries[part.variant if part.asset == "image" else part.asset] = found.path
                sources[part.id] = {"key": part.key, "cache": found.source}
            if missing:
                where = context.remote.url if context.remote is not None else str(context.cache.root)
                raise BuildError(
                    problem="not in the cache" + (" nor in the remote cache" if context.remote is not None else "")
                            + ": " + ", ".join(f"{part.id} ({part.key[:16]})" for part in missing),
                    where=where, fix="build them first (with --remote-cache, so they are pushed): "
                                     + "; ".join(part.command for part in missing))
            result = build_bundle(BundleInputs(
                arch=arch, kernel_dir=entries["kernel"], image=entries["default"] / ENTRY_IMAGE,
                initrd=entries["initrd"] / ENTRY_INITRD, measured_image=entries["measured"] / ENTRY_IMAGE,
                measured_root_hash=entries["measured"] / ENTRY_ROOT_HASH, runtime=runtime, source_date_epoch=epoch,
                versions_file=context.versions_path), staging / released)
        return {"report": result.to_json(), "parts": sources}

    # The provenance is part of the entry and goes next to the tarball, as `bundle` writes it.
    provenance = output.with_name(output.name + UNSIGNED_SUFFIX)
    delivered = deliver(context.cache, BUNDLE_KIND, content_key(inputs), inputs, build,
                        {released: output, released + UNSIGNED_SUFFIX: provenance})
    return {**delivered.report, "bundle": str(output), "provenance": str(provenance), "parts": sources or delivered.meta.get("parts", {}),
            "runtime": {"version": runtime.version, "source": runtime.source}, **delivered.cache_fields()}
