"""Build the guest kernel: plan (every input and the cache key, no work), configure, check, compile.

    build = build_kernel(KernelOptions(output_dir=Path("build/kernel")), versions=..., cache=..., fetcher=...)
    build.vmlinux, build.vmlinuz, build.config, build.record   # paths; build.info is the record

1. plan_kernel: the variant's fragments (parsed, conflict-checked), the source's digest (from
   versions.yaml, or of the local file/tree), patches, config_version, toolchain versions, the
   digest of the code that builds a kernel (osbuilder.codegraph), and the cache key over all of
   them. Every bad input is found here (exit 2) before anything is fetched, unpacked or run.
2. A cache hit (kernel/<key>) is copied to the output directory: seconds.
3. Otherwise, in a staging directory that becomes the entry by one rename: the pristine tree
   (unpacked once into the cache), patched into a hard-linked copy if there are patches;
   `make O=<work> ARCH=<karch> KCONFIG_ALLCONFIG=<fragments> allnoconfig`; every requested value
   checked in the resulting .config (whitelist.conf may excuse some); `make -jN` out of tree with a
   fixed build environment; the outputs under Kata's names plus the build record.

The O= directory is kernel-work/<arch>-<id> in the cache, at a fixed path per source and arch so
that ccache hits and nothing path-dependent differs between builds. It is deleted after the build
unless --keep-build-dir asks to keep it for incremental rebuilds; it is never part of an entry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osbuilder import __version__, codegraph, progress, runner, staging
from osbuilder.arch import Arch, host_arch, parse_arch
from osbuilder.cache import BUILT, Cache, content_key, sha256_file
from osbuilder.errors import BuildError, UsageError
from osbuilder.fetch import Fetcher
from osbuilder.hosttools import find_tool
from osbuilder.kernel.fragments import (
    Mismatch,
    Patch,
    Selection,
    Variant,
    Whitelist,
    check_values,
    find_patches,
    mismatch_error,
    parse_config,
    parse_whitelist,
    read_config_version,
    select,
)
from osbuilder.kernel.naming import OutputNames, output_names
from osbuilder.kernel.source import (
    PreparedSource,
    SourceSpec,
    patched_tree,
    plan_source,
    prepare_source,
    tree_version,
)
from osbuilder.outputs import atomic_output, write_atomically
from osbuilder.paths import KERNEL_CONFIGS_DIR
from osbuilder.tree import environment_epoch
from osbuilder.versions import Versions

log = logging.getLogger(__name__)

KEY_FORMAT = 1
CACHE_KIND = "kernel"
BUILDER_MODULE = "osbuilder.kernel.build"  # the code part of the cache key is its import closure
BUILD_USER = "osbuilder"
BUILD_HOST = "osbuilder"
# Lines kbuild prints for each step ("  CC      kernel/fork.o"); counted for the progress bar.
_KBUILD_STEP = re.compile(r"^  [A-Z][A-Z0-9_-]*(?: \[[A-Z]\])?\s+\S")
_DEFAULT_STEPS = {"x86_64": 2600, "arm64": 2500}
# Symbols that only describe the toolchain; left out when comparing configurations across builds.
_TOOLCHAIN_SYMBOL = re.compile(r"\w+_VERSION(?:_TEXT)?|RUSTC_\w+|(?:CC|AS|LD|TOOLS)_(?:HAS|CAN|IS|SUPPORTS)_\w+")


@dataclass(frozen=True)
class KernelOptions:
    arch: str | None = None  # uname -m name or alias (aarch64, arm64, amd64); default: the host's
    version: str | None = None  # must match the pinned version unless source_path is given
    confidential: bool = False
    measured: bool = True
    debug: bool = False
    build_type: str | None = None
    extra_fragments: tuple[Path, ...] = ()
    full_config: Path | None = None  # a whole .config instead of fragments (olddefconfig, no check)
    source_path: Path | None = None  # a local tree or tarball
    source_kind: str | None = None  # debian | tarball (default: versions.yaml's default-source)
    mirror: str | None = None  # Debian mirror for the debian source
    ccache: bool = False
    ccache_dir: Path | None = None  # default: <cache>/ccache
    jobs: int | None = None  # default: the CPUs we may run on
    use_cache: bool = True  # False: rebuild, and do not store the result
    keep_build_dir: bool = False
    output_dir: Path | None = None  # None: the paths point into the cache entry (do not modify)
    configs_dir: Path = KERNEL_CONFIGS_DIR


@dataclass(frozen=True)
class KernelPlan:
    arch: Arch
    variant: Variant
    configs_dir: Path
    config_version: str
    selection: Selection | None  # None with a full config
    full_config: Path | None
    whitelist: Whitelist
    patches: tuple[Patch, ...]
    source: SourceSpec
    kernel_version: str
    names: OutputNames
    toolchain: dict[str, str]
    epoch: int | None  # None: the source's own date (its top Makefile's mtime)
    rust: bool
    key_inputs: dict[str, Any]
    cache_key: str

    @property
    def cross_compile(self) -> str:
        return cross_compile_prefix(self.arch)

    @property
    def targets(self) -> list[str]:
        return make_targets(self.arch)


@dataclass(frozen=True)
class KernelBuild:
    """A built kernel. Paths are in output_dir when one was given, else in the cache entry."""

    arch: str  # uname -m name
    kernel_version: str
    config_version: str
    suffix: str
    name: str  # <version>-<config_version><suffix>
    vmlinux: Path
    vmlinuz: Path
    config: Path
    system_map: Path
    record: Path
    vmlinux_container: Path | None  # the .container symlinks (in output_dir or the entry)
    vmlinuz_container: Path | None
    output_dir: Path | None
    cache_entry: Path | None  # None with use_cache=False
    cache_key: str
    cache_hit: bool
    config_sha256: str
    duration: float
    info: dict[str, Any]  # the build record
    warnings: tuple[str, ...] = ()
    cache_source: str = "built"  # local | remote | built (osbuilder.cache)

    def to_json(self) -> dict[str, Any]:
        def describe(path: Path) -> dict[str, Any]:
            return {"path": str(path), "size": path.stat().st_size}

        return {
            "ok": True, "name": self.name, "arch": self.arch, "kernel_version": self.kernel_version,
            "config_version": self.config_version, "suffix": self.suffix,
            "outputs": {"vmlinux": describe(self.vmlinux), "vmlinuz": describe(self.vmlinuz),
                        "config": describe(self.config), "system_map": describe(self.system_map),
                        "record": describe(self.record)},
            "links": {"vmlinux": str(self.vmlinux_container) if self.vmlinux_container else None,
                      "vmlinuz": str(self.vmlinuz_container) if self.vmlinuz_container else None},
            "config_sha256": self.config_sha256, "cache_key": self.cache_key, "cache_hit": self.cache_hit,
            "cache": self.cache_source, "cache_entry": str(self.cache_entry) if self.cache_entry else None,
            "duration": round(self.duration, 3), "warnings": list(self.warnings),
            "source": self.info.get("source"), "variant": self.info.get("variant"),
        }


@dataclass(frozen=True)
class ConfigCheck:
    """The result of configure-and-check without compiling (`build-kernel --config-only`)."""

    name: str
    config: Path | None  # the written config in output_dir
    config_sha256: str
    requested: int
    whitelisted: tuple[Mismatch, ...]
    fragments: tuple[str, ...]
    skipped: tuple[str, ...]
    kernel_release: str
    duration: float
    warnings: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "name": self.name, "config": str(self.config) if self.config else None,
                "config_sha256": self.config_sha256, "requested": self.requested,
                "whitelisted": [mismatch.to_json() for mismatch in self.whitelisted],
                "fragments": list(self.fragments), "skipped": list(self.skipped),
                "kernel_release": self.kernel_release, "duration": round(self.duration, 3),
                "warnings": list(self.warnings), **self.extra}


# --- planning -------------------------------------------------------------------------------------


def cross_compile_prefix(arch: Arch) -> str:
    """CROSS_COMPILE for building arch's kernel here: empty on a host of that architecture."""
    return "" if arch.name == host_arch().name else arch.cross_prefix


def make_targets(arch: Arch) -> list[str]:
    """x86_64: the vmlinux ELF and bzImage; arm64: Image and Image.gz (vmlinux is built on the way)."""
    return ["vmlinux", "bzImage"] if arch.kernel == "x86_64" else ["Image", "Image.gz"]


def toolchain_versions(arch: Arch, cross_compile: str, rust: bool, memo: Path | None = None) -> dict[str, str]:
    """Tool versions that decide the outputs: part of the cache key and of the record."""
    tools = {"gcc": runner.tool_version("gcc", memo, "build the kernel"),
             "ld": runner.tool_version("ld", memo, "build the kernel")}
    if cross_compile:
        step = f"cross-build the {arch.name} kernel"
        tools["cross_gcc"] = runner.tool_version(f"{cross_compile}gcc", memo, step)
        tools["cross_ld"] = runner.tool_version(f"{cross_compile}ld", memo, step)
    if find_tool("pahole"):  # BTF (debug kernels) depends on it, and the .config records its version
        tools["pahole"] = runner.tool_version("pahole", memo)
    if rust:
        tools["rustc"] = runner.tool_version("rustc", memo, "build a kernel with CONFIG_RUST")
    return tools


def cache_key_inputs(*, kernel_version: str, arch: Arch, variant: Variant, config_version: str,
                     source: SourceSpec, patches: tuple[Patch, ...], selection: Selection | None,
                     whitelist: Whitelist, full_config_sha256: str | None, configs_dir: Path,
                     toolchain: dict[str, str], epoch: int | None, rust: bool, code: str | None = None
                     ) -> dict[str, Any]:
    """Everything that determines the outputs. Not -j, ccache or the output directory. `code`: the
    digest of the kernel builder's code (computed here when not given)."""
    config: dict[str, Any]
    if selection is not None:
        config = {"fragments": [[_key_label(fragment.path, fragment.label, configs_dir), fragment.sha256]
                                for fragment in selection.fragments],
                  "whitelist": whitelist.sha256}
    else:
        config = {"full_config": full_config_sha256}
    return {
        "format": KEY_FORMAT,
        "code": code or codegraph.code_digest(BUILDER_MODULE),
        "kernel_version": kernel_version,
        "arch": arch.name,
        "variant": variant.to_json(),
        "config_version": config_version,
        "source": {"kind": source.kind, "digest": source.digest},
        "patches": [[patch.label, patch.sha256] for patch in patches],
        "config": config,
        "toolchain": toolchain,
        "targets": make_targets(arch),
        "build_env": {"user": BUILD_USER, "host": BUILD_HOST, "epoch": epoch if epoch is not None else "source",
                      "rust": rust},
    }


def _key_label(path: Path, label: str, configs_dir: Path) -> str:
    # Where an extra fragment lives does not change the kernel; its name and content do.
    try:
        path.resolve().relative_to(configs_dir.resolve())
    except ValueError:
        return f"extra/{path.name}"
    return label


def plan_kernel(options: KernelOptions, versions: Versions, tool_memo: Path | None = None,
                environment: Mapping[str, str] | None = None) -> KernelPlan:
    """Every input, checked, and the cache key. Raises UsageError/ConfigError (exit 2) on bad input.
    Reads (fragments, the source's digest, tool versions, memoised in `tool_memo`), writes nothing."""
    arch = parse_arch(options.arch) if options.arch else host_arch()
    configs_dir = Path(os.path.abspath(options.configs_dir))
    if not configs_dir.is_dir():
        raise UsageError(problem="no such directory", where=f"--configs-dir {configs_dir}",
                         fix="give the kernel-configs directory")
    variant = Variant(arch.kernel, options.confidential, options.measured, options.debug, options.build_type)
    if options.build_type is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", options.build_type):
        raise UsageError(problem=f"'{options.build_type}' is not a build type name", where="--build-type",
                         fix="letters, digits, '.', '_' and '-'")
    config_version = read_config_version(configs_dir)
    selection: Selection | None = None
    full_sha: str | None = None
    whitelist = Whitelist()
    rust = False
    if options.full_config is not None:
        if options.extra_fragments or options.confidential:
            raise UsageError(problem="--config gives the whole configuration; fragments do not apply",
                             where="--config", fix="drop --extra-fragment/--confidential, or drop --config")
        if not options.full_config.is_file():
            raise UsageError(problem="no such file", where=f"--config {options.full_config}",
                             fix="give a kernel .config file")
        full_sha = sha256_file(options.full_config)
        rust = parse_config(options.full_config.read_text(errors="replace")).get("RUST") == "y"
    else:
        selection = select(configs_dir, variant, options.extra_fragments)
        whitelist = parse_whitelist(configs_dir / "whitelist.conf")
        rust_request = selection.requested().get("RUST")
        rust = rust_request is not None and rust_request.value == "y"
    if options.jobs is not None and options.jobs < 1:
        raise UsageError(problem="-j must be at least 1", where=f"-j {options.jobs}", fix="e.g. -j 2")
    source = plan_source(versions, version=options.version, source_path=options.source_path,
                         source_kind=options.source_kind)
    kernel_version = source.version
    patches = tuple(find_patches(configs_dir, kernel_version, options.build_type))
    toolchain = toolchain_versions(arch, cross_compile_prefix(arch), rust, tool_memo)
    epoch = environment_epoch(environment)
    if epoch is None and source.kind == "local-tree":
        assert source.path is not None
        epoch = int((source.path / "Makefile").stat().st_mtime)
    names = output_names(kernel_version, config_version, variant.suffix)
    inputs = cache_key_inputs(kernel_version=kernel_version, arch=arch, variant=variant,
                              config_version=config_version, source=source, patches=patches, selection=selection,
                              whitelist=whitelist, full_config_sha256=full_sha, configs_dir=configs_dir,
                              toolchain=toolchain, epoch=epoch, rust=rust,
                              code=codegraph.code_digest(BUILDER_MODULE,
                                                         memo=tool_memo.parent / codegraph.MEMO if tool_memo else None))
    return KernelPlan(arch, variant, configs_dir, config_version, selection, options.full_config, whitelist,
                      patches, source, kernel_version, names, toolchain, epoch, rust, inputs, content_key(inputs))


# --- the build environment ------------------------------------------------------------------------


def build_timestamp(epoch: int) -> str:
    """UTS_VERSION's date, in the format `date` prints (and `date -d` reads back, as kbuild does)."""
    return time.strftime("%a %b %e %H:%M:%S UTC %Y", time.gmtime(epoch))


def make_env(epoch: int, ccache_dir: Path | None) -> dict[str, str]:
    env = {
        # osbuilder may run under make (make kernel ARCH=aarch64): the outer make's flags and
        # command-line variables (ARCH!) must not leak into the kernel's make.
        "MAKEFLAGS": "", "MFLAGS": "", "MAKEOVERRIDES": "", "MAKELEVEL": "0",
        "SOURCE_DATE_EPOCH": str(epoch),
        "KBUILD_BUILD_TIMESTAMP": build_timestamp(epoch),
        "KBUILD_BUILD_USER": BUILD_USER,
        "KBUILD_BUILD_HOST": BUILD_HOST,
        "KBUILD_BUILD_VERSION": "1",
        "LC_ALL": "C",
        "TZ": "UTC",
    }
    if ccache_dir is not None:
        env["CCACHE_DIR"] = str(ccache_dir)
    else:
        env["CCACHE_DISABLE"] = "1"  # a ccache masquerade directory on PATH would otherwise cache anyway
    return env


def make_argv(plan: KernelPlan, tree: Path, work: Path, *, ccache: bool = False) -> list[str]:
    argv = [runner.require_tool("make", "build the kernel"), "-C", str(tree), f"O={work}",
            f"ARCH={plan.arch.kernel}"]
    if plan.cross_compile:
        argv.append(f"CROSS_COMPILE={plan.cross_compile}")
    if ccache:
        argv.append(f"CC={runner.require_tool('ccache', '--ccache')} {plan.cross_compile}gcc")
    if not plan.rust:
        # Kconfig records the host's rustc version in .config even when Rust is off; a kernel
        # without Rust must not depend on whether a rustc happens to be on PATH.
        argv.append("RUSTC=false")
    argv.append("LOCALVERSION=")
    return argv


# --- configure and check --------------------------------------------------------------------------


def configure(plan: KernelPlan, tree: Path, work: Path, env: dict[str, str]) -> tuple[str, list[Mismatch]]:
    """Write work/.config and check it; returns its text and the whitelisted mismatches."""
    work.mkdir(parents=True, exist_ok=True)
    base = make_argv(plan, tree, work)
    if plan.selection is None:
        assert plan.full_config is not None
        shutil.copyfile(plan.full_config, work / ".config")
        runner.run([*base, "olddefconfig"], env=env, what="make olddefconfig")
        return (work / ".config").read_text(), []
    fragments = work / "osbuilder-fragments.config"
    fragments.write_text(plan.selection.merged_text())
    log.info("merging %d fragments (%d options) onto allnoconfig", len(plan.selection.fragments),
             len(plan.selection.requests))
    result = runner.run([*base, f"KCONFIG_ALLCONFIG={fragments}", "allnoconfig"], env=env,
                        what="make allnoconfig with the fragments")
    for line in (result.stdout + result.stderr).splitlines():
        if "warning" in line.lower():
            log.debug("kconfig: %s", line)
    text = (work / ".config").read_text()
    mismatches = check_values(plan.selection.requests, parse_config(text), plan.whitelist)
    failing = [mismatch for mismatch in mismatches if not mismatch.whitelisted]
    if failing:
        raise mismatch_error(failing, f"Linux {plan.kernel_version} ({plan.arch.kernel})", tree)
    whitelisted = [mismatch for mismatch in mismatches if mismatch.whitelisted]
    for mismatch in whitelisted:
        log.warning("whitelisted: %s", mismatch.describe())
    log.info("every requested option has its value (%d checked%s)", len(plan.selection.requests),
             f", {len(whitelisted)} whitelisted" if whitelisted else "")
    return text, whitelisted


def kernel_release(work: Path) -> str:
    path = work / "include" / "config" / "kernel.release"
    return path.read_text().strip() if path.is_file() else ""


# --- comparing with the previous build of the same name -------------------------------------------


def config_values_for_comparison(config_text: str) -> dict[str, str | None]:
    """The .config's settings without the toolchain probes (they change with the compiler, not with
    the fragments)."""
    return {symbol: value for symbol, value in parse_config(config_text).items()
            if not _TOOLCHAIN_SYMBOL.fullmatch(symbol)}


def _records_path(cache: Cache, plan: KernelPlan) -> Path:
    flags = ("confidential-" if plan.variant.confidential else "") + ("measured" if plan.variant.measured else "plain")
    return cache.root / "kernel-records" / f"{plan.arch.name}-{plan.names.base}-{flags}.json"


def compare_with_previous(cache: Cache, plan: KernelPlan, config_text: str) -> dict[str, Any] | None:
    """The same name (version, config_version, suffix) must mean the same configuration: report a
    changed configuration whose config_version was not bumped."""
    path = _records_path(cache, plan)
    if not path.is_file():
        return None
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    old: dict[str, str | None] = previous.get("values", {})
    new = config_values_for_comparison(config_text)
    if old == new:
        return None
    changed = [{"symbol": f"CONFIG_{symbol}", "before": _shown(old, symbol), "now": _shown(new, symbol)}
               for symbol in sorted(set(old) | set(new)) if old.get(symbol, "absent") != new.get(symbol, "absent")]
    return {"config_version": plan.config_version, "previous_cache_key": previous.get("cache_key"),
            "changed": changed}


def _shown(values: dict[str, str | None], symbol: str) -> str:
    if symbol not in values:
        return "absent"
    value = values[symbol]
    return "is not set" if value is None else value


def drift_warning(plan: KernelPlan, drift: dict[str, Any]) -> str:
    listed = ", ".join(f"{item['symbol']} {item['before']} -> {item['now']}" for item in drift["changed"][:8])
    more = f" and {len(drift['changed']) - 8} more" if len(drift["changed"]) > 8 else ""
    return (f"the configuration of {plan.names.vmlinux} changed since its last build but config_version is still "
            f"{plan.config_version}: {listed}{more}; bump {plan.configs_dir / 'config_version'} so that different "
            "configurations never share a name")


def remember_config(cache: Cache, plan: KernelPlan, config_text: str, steps: int | None) -> None:
    path = _records_path(cache, plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous: dict[str, Any] = {}
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):
            previous = json.loads(path.read_text())
    data = {"cache_key": plan.cache_key, "values": config_values_for_comparison(config_text),
            "steps": steps or previous.get("steps")}
    write_atomically(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def _expected_steps(cache: Cache, plan: KernelPlan) -> int:
    path = _records_path(cache, plan)
    with contextlib.suppress(OSError, ValueError):
        steps = json.loads(path.read_text()).get("steps")
        if isinstance(steps, int) and steps > 0:
            return steps
    return _DEFAULT_STEPS.get(plan.arch.kernel, 2600)


# --- compiling ------------------------------------------------------------------------------------


class _Progress:
    """Counts kbuild's step lines for the bar; logs every tenth in CI logs (where there is no bar)."""

    def __init__(self, total: int, label: str, echo: bool) -> None:
        self.total = total
        self.count = 0
        self.echo = echo
        self.bar = progress.bar(total, label, unit="step")
        self.next_tenth = 1

    def __call__(self, line: str) -> None:
        if self.echo:
            self.bar.write(line, file=sys.stderr)
        if not _KBUILD_STEP.match(line):
            return
        self.count += 1
        if self.count <= self.total:
            self.bar.update(1)
        if not progress.enabled() and self.next_tenth < 10 and self.count * 10 >= self.next_tenth * self.total:
            log.info("kernel build: %d%% (%d steps)", self.next_tenth * 10, self.count)
            self.next_tenth += 1

    def close(self) -> None:
        self.bar.close()


def compile_kernel(plan: KernelPlan, tree: Path, work: Path, env: dict[str, str], jobs: int, ccache: bool,
                   expected_steps: int, verbose: int) -> int:
    argv = [*make_argv(plan, tree, work, ccache=ccache), f"-j{jobs}", *plan.targets]
    log.info("compiling Linux %s for %s with make -j%d%s (%s)", plan.kernel_version, plan.arch.name, jobs,
             " and ccache" if ccache else "", ", ".join(plan.targets))
    counter = _Progress(expected_steps, f"kernel {plan.names.base}", echo=verbose >= 1)
    try:
        runner.run(argv, env=env, stream=True, on_line=counter, what=f"make {' '.join(plan.targets)}")
    finally:
        counter.close()
    return counter.count


@contextlib.contextmanager
def work_dir(cache: Cache, plan: KernelPlan, keep: bool) -> Iterator[Path]:
    """The O= directory: a fixed path per (arch, source, patches), locked while in use. A kept
    directory is reused only if its last build finished (a crash leaves no marker: start clean)."""
    ident = content_key({"arch": plan.arch.name, "source": plan.source.digest,
                         "patches": [patch.sha256 for patch in plan.patches]})[:16]
    path = cache.root / "kernel-work" / f"{plan.arch.name}-{ident}"
    marker = path / ".osbuilder-reusable"
    with cache.lock(f"kernel-work-{plan.arch.name}-{ident}"):
        if path.exists() and not marker.is_file():
            shutil.rmtree(path)
        marker.unlink(missing_ok=True)
        path.mkdir(parents=True, exist_ok=True)
        succeeded = False
        try:
            yield path
            succeeded = True
        finally:
            if keep and succeeded:
                marker.touch()
                log.info("kept the build directory for incremental rebuilds: %s", path)
            else:
                shutil.rmtree(path, ignore_errors=True)


def _build_into(plan: KernelPlan, options: KernelOptions, staging: Path, cache: Cache, fetcher: Fetcher,
                verbose: int) -> dict[str, Any]:
    started = time.monotonic()
    with prepare_source(plan.source, cache, fetcher, options.mirror) as prepared, \
            patched_tree(cache, prepared, list(plan.patches)) as tree:
        epoch = plan.epoch if plan.epoch is not None else prepared.epoch
        ccache_dir = (options.ccache_dir or cache.root / "ccache") if options.ccache else None
        if ccache_dir is not None:
            ccache_dir.mkdir(parents=True, exist_ok=True)
        env = make_env(epoch, ccache_dir)
        jobs = options.jobs or len(os.sched_getaffinity(0))
        with work_dir(cache, plan, options.keep_build_dir) as work:
            config_text, whitelisted = configure(plan, tree, work, env)
            drift = compare_with_previous(cache, plan, config_text)
            steps = compile_kernel(plan, tree, work, env, jobs, options.ccache, _expected_steps(cache, plan), verbose)
            release = kernel_release(work)
            outputs = _collect(plan, work, staging)
    record = _record(plan, prepared, tree, epoch, config_text, whitelisted, release, outputs, drift,
                     time.monotonic() - started, steps)
    (staging / plan.names.record).write_text(json.dumps(record, indent=2) + "\n")
    return {"name": plan.names.base, "arch": plan.arch.name, "steps": steps}


def _collect(plan: KernelPlan, work: Path, staging: Path) -> dict[str, dict[str, Any]]:
    vmlinux, vmlinuz = plan.arch.uncompressed_image, plan.arch.kernel_image
    sources = {"vmlinux": (work / vmlinux, plan.names.vmlinux), "vmlinuz": (work / vmlinuz, plan.names.vmlinuz),
               "config": (work / ".config", plan.names.config),
               "system_map": (work / "System.map", plan.names.system_map)}
    outputs: dict[str, dict[str, Any]] = {}
    for label, (source, name) in sources.items():
        if not source.is_file():
            raise BuildError(problem=f"make finished but {source.relative_to(work)} is missing", where=str(work),
                             fix="look at the build output above")
        target = staging / name
        shutil.copyfile(source, target)
        os.chmod(target, 0o644)
        outputs[label] = {"file": name, "built_as": str(source.relative_to(work)), "size": target.stat().st_size,
                          "sha256": sha256_file(target)}
    for link, target_name in plan.names.links():
        os.symlink(target_name, staging / link)
    return outputs


def _record(plan: KernelPlan, prepared: PreparedSource, tree: Path, epoch: int, config_text: str,
            whitelisted: list[Mismatch], release: str, outputs: dict[str, dict[str, Any]],
            drift: dict[str, Any] | None, seconds: float, steps: int) -> dict[str, Any]:
    config: dict[str, Any] = {"sha256": outputs["config"]["sha256"],
                              "compared_digest": content_key(config_values_for_comparison(config_text))}
    if plan.selection is not None:
        config.update(
            mode="fragments",
            fragments=[{"path": fragment.label, "sha256": fragment.sha256, "options": len(fragment.requests)}
                       for fragment in plan.selection.fragments],
            skipped_by_tag=[fragment.label for fragment in plan.selection.skipped],
            requested=len(plan.selection.requests),
            whitelist={"sha256": plan.whitelist.sha256, "used": [m.to_json() for m in whitelisted]},
        )
    else:
        assert plan.full_config is not None
        config.update(mode="file", file=str(plan.full_config), file_sha256=plan.key_inputs["config"]["full_config"])
    return {
        "osbuilder": __version__,
        "name": plan.names.base,
        "kernel_version": plan.kernel_version,
        "kernel_release": release,
        "config_version": plan.config_version,
        "arch": plan.arch.name,
        "kernel_arch": plan.arch.kernel,
        "variant": plan.variant.to_json(),
        "source": {**plan.source.to_json(), "tree_version": prepared.version},
        "patches": [{"path": patch.label, "sha256": patch.sha256} for patch in plan.patches],
        "config": config,
        "toolchain": plan.toolchain,
        "build_env": {"SOURCE_DATE_EPOCH": epoch, "KBUILD_BUILD_TIMESTAMP": build_timestamp(epoch),
                      "KBUILD_BUILD_USER": BUILD_USER, "KBUILD_BUILD_HOST": BUILD_HOST, "targets": plan.targets,
                      "cross_compile": plan.cross_compile},
        "cache_key": plan.cache_key,
        "outputs": outputs,
        "links": {link: target for link, target in plan.names.links()},
        "config_changed_without_version_bump": drift,
        "build_seconds": round(seconds, 1),
        "build_steps": steps,
    }


# --- the entry points -----------------------------------------------------------------------------


def _prepare_output_dir(path: Path | None) -> Path | None:
    if path is None:
        return None
    path = Path(os.path.abspath(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(problem=f"cannot create the output directory: {exc.strerror}", where=f"-o {path}",
                         fix="choose a writable directory") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(problem="the output directory is not writable", where=f"-o {path}",
                         fix="choose a writable directory")
    staging.sweep(path)  # what a killed build left among the outputs
    return path


def install_outputs(entry: Path, names: OutputNames, output_dir: Path) -> None:
    """Copy the files (a copy: the cache entry must not change if an output is edited) and recreate
    the .container links, each by an atomic rename."""
    for name in names.files():
        with atomic_output(output_dir / name) as temporary:
            shutil.copyfile(entry / name, temporary)
            os.chmod(temporary, 0o644)
    for link, target in names.links():
        with atomic_output(output_dir / link) as temporary:
            os.symlink(target, temporary)


def build_kernel(options: KernelOptions, *, versions: Versions, cache: Cache, fetcher: Fetcher,
                 verbose: int = 0) -> KernelBuild:
    """The kernel for these options: from the cache, or built (and stored) if absent."""
    started = time.monotonic()
    if not options.use_cache and options.output_dir is None:
        raise UsageError(problem="a build that is not stored in the cache needs an output directory",
                         where="--no-cache", fix="pass -o DIR")
    plan = plan_kernel(options, versions, cache.root / runner.TOOL_VERSIONS)
    output_dir = _prepare_output_dir(options.output_dir)
    log.info("kernel %s for %s (cache key %s)", plan.names.base, plan.arch.name, plan.cache_key[:16])
    cache.sweep_stale()
    with contextlib.ExitStack() as in_use:
        return _deliver(plan, options, output_dir, cache, fetcher, verbose, started, in_use)


def _deliver(plan: KernelPlan, options: KernelOptions, output_dir: Path | None, cache: Cache, fetcher: Fetcher,
             verbose: int, started: float, in_use: contextlib.ExitStack) -> KernelBuild:
    """The entry (built if absent, protected from pruning while in_use lasts) copied to output_dir."""
    staging: Path | None = None
    try:
        if options.use_cache:
            hit = in_use.enter_context(cache.using(
                CACHE_KIND, plan.cache_key,
                lambda staging_dir: _build_into(plan, options, staging_dir, cache, fetcher, verbose),
                inputs=plan.key_inputs))
            entry, cache_hit, kept, source = hit.path, hit.hit, True, hit.source
        else:
            staging = cache.staging_dir(f"kernel-nocache-{plan.cache_key[:16]}")
            _build_into(plan, options, staging, cache, fetcher, verbose)
            entry, cache_hit, kept, source = staging, False, False, BUILT
        if cache_hit:
            log.info("cache hit (%s): %s", source, entry)
        record = json.loads((entry / plan.names.record).read_text())
        config_text = (entry / plan.names.config).read_text()
        warnings = []
        # A fresh build compared itself with the previous one already (its record says so).
        drift = compare_with_previous(cache, plan, config_text) if cache_hit else \
            record.get("config_changed_without_version_bump")
        if drift:
            warnings.append(drift_warning(plan, drift))
            log.warning("%s", warnings[-1])
        for used in record.get("config", {}).get("whitelist", {}).get("used", []):
            warnings.append(f"whitelisted: {used['where']}: {used['symbol']} requested {used['requested']}, "
                            f"got {used['actual']}")
        remember_config(cache, plan, config_text, record.get("build_steps") if not cache_hit else None)
        if output_dir is not None:
            install_outputs(entry, plan.names, output_dir)
        where = output_dir if output_dir is not None else entry
        names = plan.names
        return KernelBuild(
            arch=plan.arch.name, kernel_version=plan.kernel_version, config_version=plan.config_version,
            suffix=plan.variant.suffix, name=names.base,
            vmlinux=where / names.vmlinux, vmlinuz=where / names.vmlinuz, config=where / names.config,
            system_map=where / names.system_map, record=where / names.record,
            vmlinux_container=where / names.vmlinux_link, vmlinuz_container=where / names.vmlinuz_link,
            output_dir=output_dir, cache_entry=entry if kept else None, cache_key=plan.cache_key,
            cache_hit=cache_hit, config_sha256=record["config"]["sha256"], duration=time.monotonic() - started,
            info=record, warnings=tuple(warnings), cache_source=source,
        )
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def check_kernel_config(options: KernelOptions, *, versions: Versions, cache: Cache,
                        fetcher: Fetcher) -> ConfigCheck:
    """Merge and check the configuration without compiling (a few seconds once the source is
    unpacked); writes config-<name> to the output directory if one is given."""
    started = time.monotonic()
    plan = plan_kernel(options, versions, cache.root / runner.TOOL_VERSIONS)
    output_dir = _prepare_output_dir(options.output_dir)
    with prepare_source(plan.source, cache, fetcher, options.mirror) as prepared, \
            patched_tree(cache, prepared, list(plan.patches)) as tree:
        return _check_config(plan, prepared, tree, output_dir, cache, started)


def _check_config(plan: KernelPlan, prepared: PreparedSource, tree: Path, output_dir: Path | None, cache: Cache,
                  started: float) -> ConfigCheck:
    epoch = plan.epoch if plan.epoch is not None else prepared.epoch
    work = cache.staging_dir(f"kernel-config-{plan.cache_key[:16]}")
    try:
        config_text, whitelisted = configure(plan, tree, work, make_env(epoch, None))
        release = kernel_release(work) or tree_version(tree)
        written: Path | None = None
        if output_dir is not None:
            written = output_dir / plan.names.config
            with atomic_output(written) as temporary:
                shutil.copyfile(work / ".config", temporary)
        warnings = []
        drift = compare_with_previous(cache, plan, config_text)
        if drift:
            warnings.append(drift_warning(plan, drift))
            log.warning("%s", warnings[-1])
        selection = plan.selection
        return ConfigCheck(
            name=plan.names.base, config=written, config_sha256=sha256_file(work / ".config"),
            requested=len(selection.requests) if selection else 0, whitelisted=tuple(whitelisted),
            fragments=tuple(fragment.label for fragment in selection.fragments) if selection else (),
            skipped=tuple(fragment.label for fragment in selection.skipped) if selection else (),
            kernel_release=release, duration=time.monotonic() - started, warnings=tuple(warnings),
            extra={"arch": plan.arch.name, "variant": plan.variant.to_json(), "source": plan.source.to_json()},
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
