"""The default guest kernel as a session fixture, for the kernel tests and for the boot tests.

`default_kernel` builds the default x86_64 kernel (Debian's linux-source, common + x86_64 + measured
fragments, every option verified) once per session through the library, with the user's cache
($OSBUILDER_CACHE_DIR, else ~/.cache/osbuilder): a cold run compiles it (~10 min on 2 cores), every
later run is a cache hit that only copies the outputs. It is a `KernelBuild`: `.vmlinux` (ELF, boots
with PVH), `.vmlinuz` (bzImage), `.config`, `.record`, `.info`.
"""

from __future__ import annotations

import platform

import pytest

from osbuilder.context import Context
from osbuilder.kernel.build import (
    ConfigCheck,
    KernelBuild,
    KernelOptions,
    KernelPlan,
    build_kernel,
    check_kernel_config,
    plan_kernel,
)
from osbuilder.paths import DEFAULT_DISTROS_DIR, DEFAULT_VERSIONS, default_cache_dir
from osbuilder.runner import TOOL_VERSIONS


def user_context() -> Context:
    return Context(versions_path=DEFAULT_VERSIONS, distros_dir=DEFAULT_DISTROS_DIR, cache_dir=default_cache_dir())


@pytest.fixture(scope="session")
def default_kernel(tmp_path_factory: pytest.TempPathFactory) -> KernelBuild:
    if platform.machine() != "x86_64":
        pytest.skip("the default_kernel fixture builds the x86_64 kernel natively")
    output = tmp_path_factory.mktemp("default-kernel")
    return build_with(user_context(), KernelOptions(arch="x86_64", output_dir=output))


def build_with(context: Context, options: KernelOptions) -> KernelBuild:
    """build_kernel with the cache, fetcher and versions of a Context (as the command passes them)."""
    return build_kernel(options, versions=context.versions, cache=context.cache, fetcher=context.fetcher)


def plan_with(context: Context, options: KernelOptions) -> KernelPlan:
    return plan_kernel(options, context.versions, context.cache.root / TOOL_VERSIONS)


def check_with(context: Context, options: KernelOptions) -> ConfigCheck:
    return check_kernel_config(options, versions=context.versions, cache=context.cache, fetcher=context.fetcher)
