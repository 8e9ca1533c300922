"""Reference values for attestation (reference-values.json in the bundle), and `osbuilder verify`,
which derives every value again from the bundle's files and names the first that differs.

One function, `derive`, computes the values from a bundle tree: the bundle builder writes what it
returns, and verify compares what it returns for the shipped files with what was written. The
kernel command lines come from osbuilder.kernelcmdline (the one implementation), for each
runtime configuration in the bundle, as the runtime builds them by default (`quiet`, not debug).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder.boot.runtimeconfig import RuntimeBoot, read_runtime_config
from osbuilder.cache import sha256_file
from osbuilder.errors import BuildError, OsbuilderError
from osbuilder.evidence.assetfacts import from_asset
from osbuilder.image import verity
from osbuilder.image.layout import LayoutError, read_layout
from osbuilder.kernelcmdline import RootSpec, VerityLine, kernel_params, parse_verity, serial_console

KATA = "opt/kata"
REFERENCE_VALUES = "reference-values.json"  # in opt/kata
SHA256SUMS = "SHA256SUMS"
CONFIG_DIR = "share/defaults/kata-containers"
ASSET_DIR = "share/kata-containers"
FORMAT = "osbuilder-reference-values/1"


@dataclass(frozen=True)
class Asset:
    role: str  # image, initrd, measured
    kind: str  # image, initrd
    file: str  # path below opt/kata

    def to_json(self) -> dict[str, str]:
        return {"role": self.role, "kind": self.kind, "file": self.file}


def config_cmdline(config: RuntimeBoot, arch: str) -> str:
    """The full kernel command line the runtime builds from one configuration (its defaults:
    quiet, the architecture's serial console), as `osbuilder boot --config` boots it."""
    spec = RootSpec("image" if config.image is not None else "initrd", config.rootfs_type, config.nvdimm,
                    config.verity)
    return kernel_params(spec, arch=arch, console=serial_console(arch), extra=config.kernel_params,
                         verbosity="quiet")


def _relative(kata: Path, path: Path) -> str:
    return Path(os.path.realpath(path)).relative_to(os.path.realpath(kata)).as_posix()


def _measured(kata: Path, asset: Asset, line: VerityLine) -> dict[str, Any]:
    """The dm-verity values of a measured image, recomputed from its data partition with the
    recorded salt and size; whether its hash partition holds exactly that tree."""
    path = kata / asset.file
    try:
        image = read_layout(path)
    except (LayoutError, OSError):
        image = None
    if image is None or image.hash is None:
        return {"root_hash": None, "hash_partition_matches": False, "kernel_verity_params": None}
    fd = os.open(path, os.O_RDONLY)
    try:
        tree = verity.compute_tree(fd, data_offset=image.root.offset, data_blocks=line.data_blocks,
                                   salt=bytes.fromhex(line.salt), data_block_size=line.data_block_size,
                                   hash_block_size=line.hash_block_size)
        starts = verity.levels(line.data_blocks, line.hash_block_size).starts
        stored = [os.pread(fd, len(packed), image.hash.offset + start * line.hash_block_size)
                  for start, packed in zip(starts, tree.levels, strict=True)]
    finally:
        os.close(fd)
    derived = VerityLine(tree.root_hash, line.salt, line.data_blocks, line.data_block_size, line.hash_block_size)
    return {"root_hash": tree.root_hash, "hash_partition_matches": stored == list(tree.levels),
            "kernel_verity_params": derived.format()}


def derive(kata: Path, arch: str, assets: list[Asset], verity_lines: dict[str, VerityLine]) -> dict[str, Any]:
    """Every reference value, from the files below opt/kata. `verity_lines`: the salt and size to
    recompute each measured image's tree with (the recorded root_hash file's at build time, the
    reference values' at verification)."""
    configs: dict[str, Any] = {}
    kernel_files: set[str] = set()
    for path in sorted((kata / CONFIG_DIR).glob("configuration-*.toml")):
        config = read_runtime_config(path, root=kata.parents[1])
        kernel = _relative(kata, config.kernel)
        kernel_files.add(kernel)
        booted = config.image or config.initrd
        assert booted is not None  # read_runtime_config requires one
        configs[path.name] = {"kernel": kernel, "asset": _relative(kata, booted),
                              "kernel_verity_params": config.verity.format() if config.verity else None,
                              "kernel_cmdline": config_cmdline(config, arch)}
    kernel_files.update(_relative(kata, path) for path in (kata / ASSET_DIR).glob("vmlinu[xz]-*"))
    agent_versions = {}
    for asset in assets:
        try:
            facts = from_asset(kata / asset.file, asset.kind)
            agent_versions[asset.file] = str((facts.osbuilder.get("agent") or {}).get("version", ""))
        except (OsbuilderError, LayoutError, OSError) as error:  # a damaged asset is a mismatch, not a crash
            agent_versions[asset.file] = f"unreadable: {error}"
    version_file = kata / "VERSION"
    return {
        "format": FORMAT,
        "architecture": arch,
        "version": version_file.read_text().strip() if version_file.is_file() else None,
        "assets": [asset.to_json() for asset in assets],
        "measured": {asset.file: _measured(kata, asset, verity_lines[asset.file]) for asset in assets
                     if asset.file in verity_lines},
        "sha256": {file: sha256_file(kata / file) for file in sorted({*kernel_files, *(a.file for a in assets)})},
        "configurations": configs,
        "agent_version": agent_versions,
    }


def write(kata: Path, arch: str, assets: list[Asset], root_hash_file: str | None) -> dict[str, Any]:
    """At bundle time: derive and write opt/kata/reference-values.json."""
    lines = {}
    if root_hash_file is not None:
        measured = [asset for asset in assets if asset.role == "measured"]
        text = (kata / root_hash_file).read_text().strip()
        lines = {asset.file: parse_verity(text, root_hash_file) for asset in measured}
    values = derive(kata, arch, assets, lines)
    (kata / REFERENCE_VALUES).write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")
    return values


# --- verification ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    file: str  # the bundle file the value is derived from (or reference-values.json / SHA256SUMS)
    what: str
    expected: Any
    found: Any

    def message(self) -> str:
        what = {"root_hash": "the dm-verity root hash recomputed from the data partition differs",
                "hash_partition_matches": "the hash partition does not hold the hash tree of the data partition"
                }.get(self.what, self.what)
        return f"{self.file}: {what}: expected {self.expected!r}, found {self.found!r}"


def _walk(expected: Any, found: Any, file: str, what: str) -> Iterator[Mismatch]:
    if isinstance(expected, dict) and isinstance(found, dict):
        for key in sorted(set(expected) | set(found)):
            yield from _walk(expected.get(key), found.get(key), file, f"{what}.{key}" if what else key)
    elif expected != found:
        yield Mismatch(file, what, expected, found)


def compare(reference: dict[str, Any], derived: dict[str, Any]) -> list[Mismatch]:
    """Every difference, in the order a verifier cares about: the measured images' dm-verity, the
    digests, the command lines, the agent version, then anything else."""
    problems: list[Mismatch] = []
    for file in sorted(set(reference.get("measured", {})) | set(derived.get("measured", {}))):
        ref, got = reference.get("measured", {}).get(file) or {}, derived.get("measured", {}).get(file) or {}
        if ref.get("root_hash") != got.get("root_hash"):
            problems.append(Mismatch(file, "root_hash", ref.get("root_hash"), got.get("root_hash")))
        if not got.get("hash_partition_matches", False):
            problems.append(Mismatch(file, "hash_partition_matches", True, got.get("hash_partition_matches")))
        problems.extend(_walk(ref, got, file, "dm-verity"))
    for file in sorted(set(reference.get("sha256", {})) | set(derived.get("sha256", {}))):
        problems.extend(_walk(reference.get("sha256", {}).get(file), derived.get("sha256", {}).get(file), file,
                              "sha256"))
    for name in sorted(set(reference.get("configurations", {})) | set(derived.get("configurations", {}))):
        problems.extend(_walk(reference.get("configurations", {}).get(name),
                              derived.get("configurations", {}).get(name), f"{CONFIG_DIR}/{name}", ""))
    for file in sorted(set(reference.get("agent_version", {})) | set(derived.get("agent_version", {}))):
        problems.extend(_walk(reference.get("agent_version", {}).get(file),
                              derived.get("agent_version", {}).get(file), file, "agent version"))
    rest = {key: value for key, value in reference.items()
            if key not in ("measured", "sha256", "configurations", "agent_version")}
    problems.extend(_walk(rest, {key: derived.get(key) for key in rest}, REFERENCE_VALUES, ""))
    seen: set[tuple[str, str]] = set()  # a verity root hash mismatch is reported once
    unique = []
    for problem in problems:
        if (problem.file, problem.what.removeprefix("dm-verity.")) not in seen:
            seen.add((problem.file, problem.what.removeprefix("dm-verity.")))
            unique.append(problem)
    return unique


def read_sha256sums(kata: Path) -> dict[str, str]:
    path = kata / SHA256SUMS
    if not path.is_file():
        raise BuildError(problem="the bundle has no SHA256SUMS", where=str(kata), fix="rebuild it with osbuilder bundle")
    sums = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        sums[name] = digest
    return sums


def check_sums(kata: Path, sums: dict[str, str]) -> list[Mismatch]:
    problems = []
    for name, digest in sorted(sums.items()):
        path = kata / name
        found = sha256_file(path) if path.is_file() else "missing"
        if found != digest:
            problems.append(Mismatch(name, "sha256 (SHA256SUMS)", digest, found))
    listed = set(sums) | {SHA256SUMS}
    for path in sorted(kata.rglob("*")):
        name = path.relative_to(kata).as_posix()
        if path.is_file() and not path.is_symlink() and name not in listed:
            problems.append(Mismatch(name, "a file SHA256SUMS does not list", None, "present"))
    return problems


def verify_tree(kata: Path) -> tuple[dict[str, Any], list[Mismatch]]:
    """The reference values and every mismatch: reference-values.json against SHA256SUMS first (so
    an edit there is named as such), then every value derived again, then SHA256SUMS."""
    sums = read_sha256sums(kata)
    path = kata / REFERENCE_VALUES
    if not path.is_file():
        return {}, [Mismatch(REFERENCE_VALUES, "missing", "present", None)]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if sums.get(REFERENCE_VALUES) != digest:
        return {}, [Mismatch(REFERENCE_VALUES, "sha256 (SHA256SUMS)", sums.get(REFERENCE_VALUES), digest)]
    try:
        reference = json.loads(path.read_text())
        assets = [Asset(**entry) for entry in reference["assets"]]
        lines = {file: VerityLine(entry["root_hash"], *_line_parts(entry))
                 for file, entry in reference.get("measured", {}).items()}
    except (ValueError, KeyError, TypeError) as error:
        return {}, [Mismatch(REFERENCE_VALUES, f"unreadable ({error})", "valid JSON", None)]
    derived = derive(kata, str(reference.get("architecture")), assets, lines)
    return reference, [*compare(reference, derived), *check_sums(kata, sums)]


def _line_parts(entry: dict[str, Any]) -> tuple[str, int, int, int]:
    line = VerityLine.parse(str(entry["kernel_verity_params"]))
    return line.salt, line.data_blocks, line.data_block_size, line.hash_block_size
