"""The release bundle: kata-static-<version>-<arch>.tar.zst, installed under /opt/kata.

opt/kata/
  VERSION, versions.yaml, osbuilder-manifest.json, SHA256SUMS
  share/kata-containers/      the kernel, image, initrd and measured image under versioned names,
                              with Kata's symlinks (vmlinux.container, kata-containers.img, ...)
  share/defaults/kata-containers/configuration-{qemu,qemu-initrd,qemu-measured,clh,fc}.toml
  runtime-rs/bin/, bin/       the runtime binaries

The runtime must be the version of the agent recorded in every guest asset; the bundle is
reproducible (sorted entries, owner 0, mtimes clamped, deterministic zstd).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from osbuilder import __version__, staging
from osbuilder.arch import Arch
from osbuilder.bundle.configs import ASSETS_DIR, ConfigSpec, render
from osbuilder.bundle.runtime import Runtime, require_match
from osbuilder.bundle.tarball import write_tar_zst
from osbuilder.cache import sha256_file
from osbuilder.errors import UsageError
from osbuilder.evidence import bundled as evidence
from osbuilder.inspectors import InspectOptions, Report
from osbuilder.inspectors.image import INSPECTOR as IMAGE_INSPECTOR
from osbuilder.inspectors.initrd import INSPECTOR as INITRD_INSPECTOR
from osbuilder.paths import DEFAULT_VERSIONS, KERNEL_CONFIGS_DIR

KATA = "opt/kata"
SHARE = ASSETS_DIR.lstrip("/")
DEFAULTS = "opt/kata/share/defaults/kata-containers"


@dataclass(frozen=True)
class BundleInputs:
    arch: Arch
    kernel_dir: Path  # a build-kernel output directory
    image: Path
    initrd: Path
    measured_image: Path | None
    measured_root_hash: Path | None
    runtime: Runtime
    source_date_epoch: int
    versions_file: Path = DEFAULT_VERSIONS
    sign_key: Path | None = None  # signs the provenance (DSSE)


@dataclass
class BundleResult:
    path: Path
    version: str
    sha256: str
    files: list[dict[str, Any]] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    duration: float = 0.0
    provenance: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "bundle": str(self.path), "version": self.version, "sha256": self.sha256,
                "size": self.path.stat().st_size, "files": len(self.files), "duration": round(self.duration, 3),
                "provenance": str(self.provenance) if self.provenance else None,
                "layout": sorted(entry["path"] for entry in self.files)}


@dataclass(frozen=True)
class _Kernel:
    name: str  # <version>-<config_version><suffix>
    files: dict[str, Path]  # bundle file name -> source
    links: dict[str, str]  # vmlinux.container -> vmlinux-<name>
    record: dict[str, Any]


def _kernel(kernel_dir: Path) -> _Kernel:
    links: dict[str, str] = {}
    for link in ("vmlinux.container", "vmlinuz.container"):
        path = kernel_dir / link
        if not path.is_symlink():
            raise UsageError(problem=f"no {link} in {kernel_dir}", where=f"--kernel-dir {kernel_dir}",
                             fix="give the output directory of osbuilder build-kernel (make kernel)")
        links[link] = os.readlink(path)
    name = links["vmlinux.container"].removeprefix("vmlinux-")
    files = {}
    for stem in ("vmlinux", "vmlinuz", "config", "System.map"):
        source = kernel_dir / f"{stem}-{name}"
        if not source.is_file():
            raise UsageError(problem=f"{source.name} is missing", where=f"--kernel-dir {kernel_dir}",
                             fix="rebuild the kernel with osbuilder build-kernel")
        files[source.name] = source
    record_path = kernel_dir / f"kernel-{name}.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    return _Kernel(name, files, links, record)


def _inspect(path: Path, option: str, kind: str) -> Report:
    if not path.is_file():
        raise UsageError(problem=f"{path} does not exist", where=f"{option} {path}", fix="build it first")
    inspector = {"image": IMAGE_INSPECTOR, "initrd": INITRD_INSPECTOR}[kind]
    with path.open("rb") as handle:
        head = handle.read(64 * 1024)
    if not inspector.detect(head, path.stat().st_size):
        raise UsageError(problem=f"{path} is not {'a disk image' if kind == 'image' else 'an initrd'}",
                         where=f"{option} {path}", fix="give the asset osbuilder built")
    report = inspector.inspect(path, InspectOptions())
    if report.problems:
        raise UsageError(problem=f"{path} is not valid: {'; '.join(report.problems)}", where=f"{option} {path}",
                         fix="rebuild it")
    return report


def _osbuilder_yaml(report: Report, path: Path, option: str) -> dict[str, Any]:
    metadata = report.data.get("osbuilder")
    content = metadata.get("content") if isinstance(metadata, dict) else None
    if not isinstance(content, dict):
        raise UsageError(problem=f"{path} carries no readable /var/lib/osbuilder/osbuilder.yaml",
                         where=f"{option} {path}", fix="build the rootfs with osbuilder build-rootfs")
    return content


def _asset_name(content: dict[str, Any], suffix: str) -> str:
    distro = content.get("base-distro") or {}
    return f"kata-{distro.get('name', 'unknown')}-{distro.get('version', 'unknown')}{suffix}"


def build_bundle(inputs: BundleInputs, output: Path) -> BundleResult:
    started = time.monotonic()
    kernel = _kernel(inputs.kernel_dir)
    assets: list[tuple[str, Path, str, dict[str, Any], Report]] = []  # (role, path, option, yaml, report)
    for role, path, option, kind in (("image", inputs.image, "--image", "image"),
                                     ("initrd", inputs.initrd, "--initrd", "initrd"),
                                     ("measured", inputs.measured_image, "--measured-image", "image")):
        if path is None:
            continue
        report = _inspect(path, option, kind)
        assets.append((role, path, option, _osbuilder_yaml(report, path, option), report))
    require_match(inputs.runtime, {f"{path} (agent.version in osbuilder.yaml)": str(content["agent"]["version"])
                                   for _, path, _, content, _ in assets})
    if inputs.measured_image is not None and inputs.measured_root_hash is None:
        raise UsageError(problem="a measured image needs its root hash record", where="--measured-root-hash",
                         fix="give the root_hash*.txt written next to the measured image")
    version = inputs.runtime.version
    staging.sweep(output.parent)  # what a killed bundle build left
    with staging.temporary_directory(output.parent, "bundle") as work:
        root = work / "root"
        share = root / SHARE
        share.mkdir(parents=True)
        for name, source in kernel.files.items():
            shutil.copyfile(source, share / name)
        for link, target in kernel.links.items():
            (share / link).symlink_to(target)
        names: dict[str, str] = {}
        for role, path, _, content, _ in assets:
            suffix = {"image": ".image", "initrd": ".initrd", "measured": "-measured.image"}[role]
            names[role] = _asset_name(content, suffix)
            shutil.copyfile(path, share / names[role])
            link = {"image": "kata-containers.img", "initrd": "kata-containers-initrd.img",
                    "measured": "kata-containers-measured.img"}[role]
            (share / link).symlink_to(names[role])
        verity_line = ""
        if inputs.measured_root_hash is not None:
            verity_line = inputs.measured_root_hash.read_text().strip()
            (share / "root_hash_measured.txt").write_text(verity_line + "\n")
        _write_configs(root, inputs.arch, names, verity_line)
        for member, content_bytes in inputs.runtime.files.items():
            installed = root / member
            installed.parent.mkdir(parents=True, exist_ok=True)
            installed.write_bytes(content_bytes)
            installed.chmod(0o755)
        (root / KATA / "VERSION").write_text(version + "\n")
        shutil.copyfile(inputs.versions_file, root / KATA / "versions.yaml")
        # Evidence hook (issue 13): SBOMs and reference-values.json, listed in SHA256SUMS like the rest.
        staged = evidence.stage(
            root, arch=inputs.arch.name, version=version, epoch=inputs.source_date_epoch, kernel_record=kernel.record,
            kernel_files=[f"share/kata-containers/{name}" for name in sorted(kernel.files, key=_vmlinux_first)],
            assets=names, root_hash_file="share/kata-containers/root_hash_measured.txt" if verity_line else None,
            runtime_files=[member.removeprefix(f"{KATA}/") for member in sorted(inputs.runtime.files)])
        files = _file_list(root)
        # Every staged file was hashed once, in _file_list; the manifest and SHA256SUMS reuse that.
        digests = {entry["path"]: entry["sha256"] for entry in files if "sha256" in entry}
        manifest = _manifest(inputs, kernel, assets, files, version,
                             {role: digests[f"{SHARE}/{name}"] for role, name in names.items()})
        manifest_path = root / KATA / "osbuilder-manifest.json"
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        digests[f"{KATA}/osbuilder-manifest.json"] = sha256_file(manifest_path)
        _write_sha256sums(root / KATA, digests)
        _clamp_times(root, inputs.source_date_epoch)
        write_tar_zst(root, output, inputs.source_date_epoch)
        attested = evidence.attest(output, root, manifest=manifest, staged=staged, epoch=inputs.source_date_epoch,
                                   arch=inputs.arch.name, sign_key=inputs.sign_key)
    listed = [*files, {"path": f"{KATA}/osbuilder-manifest.json"}, {"path": f"{KATA}/SHA256SUMS"}]
    return BundleResult(output, version, sha256_file(output), listed, manifest, time.monotonic() - started, attested)


def _vmlinux_first(name: str) -> tuple[bool, str]:
    return (not name.startswith("vmlinux-"), name)


def _write_configs(root: Path, arch: Arch, names: dict[str, str], verity_line: str) -> None:
    defaults = root / DEFAULTS
    defaults.mkdir(parents=True)
    specs = []
    if "image" in names:
        specs += [
            ConfigSpec("configuration-qemu.toml", "qemu", "vmlinux.container", image="kata-containers.img",
                       description=f"{names['image']} as an NVDIMM (DAX)"),
            ConfigSpec("configuration-clh.toml", "clh", "vmlinux.container", image="kata-containers.img",
                       description=f"{names['image']} over virtio-blk"),
            ConfigSpec("configuration-fc.toml", "fc", "vmlinux.container", image="kata-containers.img",
                       description=f"{names['image']} over virtio-blk (MMIO)"),
        ]
    if "initrd" in names:
        specs.append(ConfigSpec("configuration-qemu-initrd.toml", "qemu", "vmlinux.container",
                                initrd="kata-containers-initrd.img", description=f"{names['initrd']} (agent as init)"))
    if "measured" in names:
        specs.append(ConfigSpec("configuration-qemu-measured.toml", "qemu", "vmlinux.container",
                                image="kata-containers-measured.img", verity_line=verity_line,
                                description=f"{names['measured']} with dm-verity (dm-mod.create)"))
    for spec in specs:
        (defaults / spec.filename).write_text(render(spec, arch))


def _file_list(root: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            entries.append({"path": relative, "symlink": os.readlink(path)})
        elif path.is_file():
            entries.append({"path": relative, "sha256": sha256_file(path), "size": path.stat().st_size})
    return entries


def _manifest(inputs: BundleInputs, kernel: _Kernel, assets: list[tuple[str, Path, str, dict[str, Any], Report]],
              files: list[dict[str, Any]], version: str, asset_digests: dict[str, str]) -> dict[str, Any]:
    guests: dict[str, dict[str, Any]] = {}
    for role, path, _, content, report in assets:
        rootfs_manifest = report.data.get("rootfs_manifest") or {}
        guests[role] = {
            "file": path.name, "sha256": asset_digests[role], "osbuilder.yaml": content,
            "rootfs": rootfs_manifest if isinstance(rootfs_manifest, dict) else {},
        }
    agent_digests = sorted({str(guest["rootfs"].get("agent", {}).get("sha256")) for guest in guests.values()
                            if isinstance(guest["rootfs"].get("agent"), dict)})
    return {
        "format": "osbuilder-bundle/1",
        "version": version,
        "architecture": inputs.arch.name,
        "source_date_epoch": inputs.source_date_epoch,
        "osbuilder": __version__,
        "inputs": {
            # The kernel's build record: source and digest, merged-config hash, variant, toolchain, cache key.
            "kernel": {"name": kernel.name, **_kernel_inputs(kernel.record)},
            "guests": guests,
            "agent": {"version": version, "sha256": agent_digests},
            "runtime": {"version": inputs.runtime.version, "source": inputs.runtime.recorded,
                        "sha256": inputs.runtime.sha256,
                        "files": {name: hashlib.sha256(data).hexdigest() for name, data in
                                  sorted(inputs.runtime.files.items())}},
            "versions_yaml_sha256": next(entry["sha256"] for entry in files
                                         if entry["path"] == f"{KATA}/versions.yaml"),
        },
        "files": files,
    }


# Machine-local parts of the kernel's build record: the build's timings, and whether this machine's
# own earlier builds had another configuration under the same version (its kernel-records).
_KERNEL_RECORD_LOCAL = ("build_seconds", "build_steps", "config_changed_without_version_bump")


def _kernel_inputs(record: dict[str, Any]) -> dict[str, Any]:
    """The kernel's build record as a release records it: what its cache key covers, so the bundle's
    bytes do not depend on the machine that built the kernel. Local files (a source tree or tarball,
    a --config file, an extra fragment) are named as the key names them: by name, not by path; their
    digests say which."""
    kept = {key: value for key, value in record.items() if key not in _KERNEL_RECORD_LOCAL}
    source = kept.get("source")
    if isinstance(source, dict) and isinstance(source.get("path"), str):
        kept["source"] = {**source, "path": Path(source["path"]).name}
    config = kept.get("config")
    if isinstance(config, dict):
        config = dict(config)
        if isinstance(config.get("file"), str):
            config["file"] = Path(config["file"]).name
        if isinstance(config.get("fragments"), list):
            config["fragments"] = [{**fragment, "path": _fragment_label(fragment["path"])}
                                   if isinstance(fragment, dict) and isinstance(fragment.get("path"), str) else fragment
                                   for fragment in config["fragments"]]
        if isinstance(config.get("skipped_by_tag"), list):
            config["skipped_by_tag"] = [_fragment_label(label) if isinstance(label, str) else label
                                        for label in config["skipped_by_tag"]]
        kept["config"] = config
    return kept


def _fragment_label(label: str) -> str:
    """kernel-configs' own fragments keep their label (`common/9p.conf`, `confidential/x86_64/tdx.conf`);
    an extra fragment, labelled by the path it was given, becomes `extra/<name>` as in the kernel's key."""
    path = PurePosixPath(label)
    if not path.is_absolute() and ".." not in path.parts and (KERNEL_CONFIGS_DIR / path).is_file():
        return label
    return f"extra/{path.name}"


def _write_sha256sums(kata: Path, digests: dict[str, str]) -> None:
    """SHA256SUMS for every regular file below opt/kata, from digests keyed by bundle path."""
    lines = []
    for path in sorted(kata.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name != "SHA256SUMS":
            relative = path.relative_to(kata.parents[1]).as_posix()
            lines.append(f"{digests[relative]}  {path.relative_to(kata).as_posix()}\n")
    (kata / "SHA256SUMS").write_text("".join(lines))


def _clamp_times(root: Path, epoch: int) -> None:
    for path in [root, *root.rglob("*")]:
        os.utime(path, (epoch, epoch), follow_symlinks=False)

