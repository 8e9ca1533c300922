"""The evidence a release bundle carries, called by the bundle builder through two hooks:

- `stage` (before the file list and SHA256SUMS are made): each guest asset's SBOM, derived from the
  asset's own bytes, and the bundle's SBOM relating them (opt/kata/sbom/), and
  opt/kata/reference-values.json;
- `attest` (after the tarball is written): the provenance next to the tarball, signed with
  --sign-key when one is given.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder import runner
from osbuilder.cache import sha256_file
from osbuilder.evidence import provenance, refvalues, sbom
from osbuilder.evidence.assetfacts import from_asset
from osbuilder.outputs import write_atomically

log = logging.getLogger(__name__)

SBOM_DIR = "sbom"  # below opt/kata
BUNDLE_SBOM = f"{SBOM_DIR}/kata-static{sbom.SUFFIX}"


@dataclass(frozen=True)
class Staged:
    asset_packages: dict[str, dict[str, Any]]  # asset file -> its packages.json
    reference_values: dict[str, Any]


def stage(root: Path, *, arch: str, version: str, epoch: int, kernel_record: dict[str, Any], kernel_files: list[str],
          assets: dict[str, str], root_hash_file: str | None, runtime_files: list[str]) -> Staged:
    """`kernel_files`, `runtime_files`: paths below opt/kata (the vmlinux first); `assets`: role ->
    file name in share/kata-containers; `root_hash_file`: below opt/kata."""
    kata = root / refvalues.KATA
    (kata / SBOM_DIR).mkdir()
    bundled: list[sbom.BundledAsset] = []
    packages: dict[str, dict[str, Any]] = {}
    entries = []
    for role, name in assets.items():
        kind = "initrd" if role == "initrd" else "image"
        file = f"{refvalues.ASSET_DIR}/{name}"
        entries.append(refvalues.Asset(role, kind, file))
        facts = from_asset(kata / file, kind)
        digest = sha256_file(kata / file)
        text = sbom.render(sbom.asset_bom(facts, file_name=name, sha256=digest, kind=kind, epoch=epoch))
        sbom_file = f"{SBOM_DIR}/{name}{sbom.SUFFIX}"
        (kata / sbom_file).write_text(text)
        packages[file] = facts.packages
        bundled.append(sbom.BundledAsset(file, kind, digest, sbom_file, hashlib.sha256(text.encode()).hexdigest(),
                                         sbom.serial_link(text), dict(facts.manifest.get("agent") or {})))
    bom = sbom.bundle_bom(
        name=f"kata-static-{version}-{arch}", version=version, arch=arch, epoch=epoch, kernel=kernel_record,
        kernel_files=[sbom.BundledFile(file, sha256_file(kata / file)) for file in kernel_files], assets=bundled,
        runtime=[sbom.BundledFile(file, sha256_file(kata / file)) for file in runtime_files], runtime_version=version)
    (kata / BUNDLE_SBOM).write_text(sbom.render(bom))
    values = refvalues.write(kata, arch, entries, root_hash_file)
    return Staged(packages, values)


def attest(tarball: Path, root: Path, *, manifest: dict[str, Any], staged: Staged, epoch: int, arch: str,
           sign_key: Path | None, memo: Path | None = None) -> Path:
    """Write the provenance next to the tarball: `<tarball>.intoto.json`, or with a key the signed
    envelope `<tarball>.intoto.jsonl`."""
    kata = root / refvalues.KATA
    sums = refvalues.read_sha256sums(kata)
    inputs = manifest.get("inputs", {})
    tools = {name: str(version) for name, version in sorted((inputs.get("kernel", {}).get("toolchain") or {}).items())}
    tools["zstd"] = runner.tool_version("zstd", memo, "compress the bundle")
    parameters = {
        "architecture": arch,
        "source_date_epoch": epoch,
        "bundle": {"version": manifest.get("version"), "runtime_source": inputs.get("runtime", {}).get("source"),
                   "assets": {role: guest.get("file") for role, guest in sorted(inputs.get("guests", {}).items())}},
        "rootfs": {role: {"recipe": (guest.get("rootfs") or {}).get("recipe"),
                          "init": (guest.get("rootfs") or {}).get("init"),
                          "options": (guest.get("rootfs") or {}).get("options")}
                   for role, guest in sorted(inputs.get("guests", {}).items())},
        "kernel": {"name": inputs.get("kernel", {}).get("name"), "variant": inputs.get("kernel", {}).get("variant"),
                   "build_env": inputs.get("kernel", {}).get("build_env")},
    }
    data = provenance.render(provenance.statement(
        tarball=tarball, tarball_sha256=sha256_file(tarball), sums=sums,
        sums_sha256=sha256_file(kata / refvalues.SHA256SUMS), manifest=manifest,
        asset_packages=staged.asset_packages, tools=tools, parameters=parameters))
    signed = tarball.with_name(tarball.name + provenance.SIGNED_SUFFIX)
    unsigned = tarball.with_name(tarball.name + provenance.UNSIGNED_SUFFIX)
    if sign_key is not None:
        write_atomically(signed, provenance.sign(data, sign_key))
        unsigned.unlink(missing_ok=True)
        return signed
    write_atomically(unsigned, data)
    signed.unlink(missing_ok=True)  # a stale signature of an earlier bundle would not match
    return unsigned
