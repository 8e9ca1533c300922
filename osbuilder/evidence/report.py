"""`osbuilder report`: one self-contained HTML page about a release bundle, for people.

Four sections: sizes (each asset against its budget, and what makes the image big: packages by
installed size and directories by size, drawn as inline SVG bars), the boot timeline of each
asset (kernel started → root mounted → agent ready → powered off, from `boot --json` results or
from running the boot check), the inputs and their pins (the provenance's resolved dependencies,
else the bundle manifest's inputs), and the SBOM's package table with a search box. No network:
styles and the small search script are inline.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from osbuilder import __version__, runner
from osbuilder.errors import UsageError
from osbuilder.evidence import refvalues
from osbuilder.evidence.assetfacts import from_asset
from osbuilder.evidence.budgets import applies_to_pinned, limit
from osbuilder.evidence.sizes import Bar, directory_sizes, installed_sizes
from osbuilder.versions import Versions

TEMPLATES = Path(__file__).resolve().parent / "templates"
DATA_FILES = ("evidence/templates/report.html.j2",)
TOP = 25  # bars per chart
TIMELINE_KEYS = ("kernel_started", "root_mounted", "agent_ready", "powered_off")


@dataclass
class ReportData:
    title: str
    assets: list[dict[str, Any]] = field(default_factory=list)  # file, kind, size, budget, free
    packages_by_size: list[Bar] = field(default_factory=list)
    directories_by_size: list[Bar] = field(default_factory=list)
    image_name: str = ""
    boots: list[dict[str, Any]] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    packages: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _image_tree(image: Path, workdir: Path) -> Path:
    """The image's files, copied out without mounting (debugfs rdump for ext4, fsck.erofs for erofs)."""
    from osbuilder.image.layout import read_layout

    layout = read_layout(image)
    target = workdir / "tree"
    target.mkdir()
    if layout.fs_type == "ext4":
        debugfs = runner.require_tool("debugfs", "read the image's files")
        runner.run([debugfs, "-R", f"rdump / {target}", f"{image}?offset={layout.root.offset}"], what="debugfs rdump")
    elif layout.fs_type == "erofs":
        blob = workdir / "fs.erofs"
        with image.open("rb") as source, blob.open("wb") as out:
            os.copy_file_range(source.fileno(), out.fileno(), layout.size - layout.root.offset, layout.root.offset, 0)
        fsck = runner.require_tool("fsck.erofs", "read the image's files")
        runner.run([fsck, f"--extract={target}", "--no-preserve", blob], what="fsck.erofs --extract")
    return target


def boots_from(results: list[Path]) -> list[dict[str, Any]]:
    boots = []
    for path in results:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise UsageError(problem=f"not a boot --json result: {error}", where=f"--boot-json {path}",
                             fix="give the output of osbuilder boot --json (one boot or --bundle)") from error
        entries = data.get("boots") if isinstance(data.get("boots"), list) else [data]
        for entry in entries:
            if not isinstance(entry, dict) or "timings" not in entry:
                raise UsageError(problem="no timings in it", where=f"--boot-json {path}",
                                 fix="give the output of osbuilder boot --json")
            boots.append(entry)
    return boots


def run_boot_checks(bundle: Path) -> list[dict[str, Any]]:
    """Boot every QEMU configuration of the bundle (`osbuilder boot --bundle --json`)."""
    result = runner.run([sys.executable, "-m", "osbuilder", "boot", "--bundle", bundle, "--json"], check=False,
                        what="osbuilder boot --bundle")
    try:
        data = json.loads(result.stdout)
    except ValueError as error:
        raise UsageError(problem=f"the boot check printed no JSON: {result.stderr[-500:]}", where=str(bundle),
                         fix="run osbuilder boot --bundle by hand") from error
    return list(data.get("boots", []))


def _timeline(boot: dict[str, Any]) -> dict[str, Any]:
    timings = boot.get("timings") or {}
    label = boot.get("config") or boot.get("kind") or "boot"
    return {"label": label, "kind": boot.get("kind", ""), "ok": bool(boot.get("ok")), "accel": boot.get("accel", ""),
            "timings": {key: timings.get(key) for key in TIMELINE_KEYS}, "error": boot.get("error")}


def _inputs(kata: Path, provenance_file: Path | None) -> list[dict[str, Any]]:
    if provenance_file is not None and provenance_file.is_file():
        from osbuilder.evidence.provenance import SIGNED_SUFFIX, payload_of

        try:  # shown, not verified: `osbuilder verify` checks the signature
            text = provenance_file.read_bytes()
            statement = json.loads(payload_of(text.splitlines()[0]) if provenance_file.name.endswith(SIGNED_SUFFIX)
                                   else text)
        except (ValueError, KeyError, IndexError):
            statement = {}
        dependencies = statement.get("predicate", {}).get("buildDefinition", {}).get("resolvedDependencies", [])
        if dependencies:
            return [{"name": entry.get("name", ""), "uri": entry.get("uri", ""),
                     "sha256": (entry.get("digest") or {}).get("sha256", ""),
                     "notes": ", ".join(f"{key}: {value}" for key, value in sorted((entry.get("annotations") or {}).items())
                                        if not isinstance(value, dict))} for entry in dependencies]
    manifest = json.loads((kata / "osbuilder-manifest.json").read_text())
    inputs = manifest.get("inputs", {})
    kernel = inputs.get("kernel", {})
    source = kernel.get("source") or {}
    rows = [{"name": "kernel source", "uri": f"{source.get('kind', '')} {source.get('version', '')}",
             "sha256": source.get("sha256", ""), "notes": f"config {(kernel.get('config') or {}).get('sha256', '')}"}]
    for role, guest in sorted(inputs.get("guests", {}).items()):
        recipe = (guest.get("rootfs") or {}).get("recipe") or {}
        rows.append({"name": f"{role}: recipe {recipe.get('name', '')} {recipe.get('release', '')}", "uri": "",
                     "sha256": recipe.get("sha256", ""), "notes": ""})
    runtime = inputs.get("runtime", {})
    rows.append({"name": "runtime", "uri": str(runtime.get("source", "")), "sha256": runtime.get("sha256", ""),
                 "notes": f"version {runtime.get('version', '')}"})
    return rows


def _sbom_packages(kata: Path, assets: list[refvalues.Asset]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for asset in assets:
        path = kata / "sbom" / f"{Path(asset.file).name}.cdx.json"
        if not path.is_file():
            continue
        for component in json.loads(path.read_text()).get("components", []):
            if not str(component.get("purl", "")).startswith("pkg:deb/"):
                continue
            properties = {item["name"].removeprefix("osbuilder:"): item["value"]
                          for item in component.get("properties", [])}
            licenses = [entry.get("license", {}).get("id") or entry.get("license", {}).get("name", "")
                        for entry in component.get("licenses", [])]
            row = rows.setdefault(component["purl"], {
                "name": component["name"], "version": component.get("version", ""),
                "arch": properties.get("architecture", ""), "source": properties.get("source-package", ""),
                "licenses": ", ".join(licenses), "suite": properties.get("suite", ""),
                "sha256": (component.get("hashes") or [{}])[0].get("content", ""), "assets": []})
            row["assets"].append(asset.role)
    return sorted(rows.values(), key=lambda row: (row["name"], row["arch"]))


def gather(bundle: Path, workdir: Path, *, boots: list[dict[str, Any]], versions: Versions | None = None,
           provenance_file: Path | None = None) -> ReportData:
    from osbuilder.bundle.extract import extract_bundle
    from osbuilder.image.layout import read_layout
    from osbuilder.image.superblock import probe

    root = bundle if bundle.is_dir() else extract_bundle(bundle.resolve(), workdir)
    kata = root / refvalues.KATA
    values_path = kata / refvalues.REFERENCE_VALUES
    if not values_path.is_file():
        raise UsageError(problem=f"no {refvalues.KATA}/{refvalues.REFERENCE_VALUES}", where=str(bundle),
                         fix="give a bundle made by this osbuilder (osbuilder bundle)")
    values = json.loads(values_path.read_text())
    assets = [refvalues.Asset(**entry) for entry in values.get("assets", [])]
    data = ReportData(title=f"kata-static {values.get('version', '')} ({values.get('architecture', '')})")
    budgets: dict[str, int] = {}
    for kind in ("image", "initrd", "kernel"):
        found = limit(versions, str(values.get("architecture")), kind, "size") if versions is not None else None
        if found is not None:
            budgets[kind] = int(found.value)
    for file in values.get("sha256", {}):
        if "/vmlinu" in file:
            size = (kata / file).stat().st_size
            data.assets.append({"file": file, "kind": "kernel", "size": size, "budget": budgets.get("kernel"),
                                "free": None, "budget_note": "no budget"})
    for asset in assets:
        path = kata / asset.file
        free = None
        if asset.kind == "image":
            layout = read_layout(path)
            info = probe(path, layout.root.offset)
            blocks = info.details.get("free_blocks") if info is not None else None
            if info is not None and isinstance(blocks, int):
                free = blocks * info.block_size
        # As at build time: an image or initrd budget is for the asset versions.yaml pins.
        facts = from_asset(path, asset.kind)
        pinned = versions is not None and applies_to_pinned(
            versions, asset.kind, str(values.get("architecture")), facts.distro, facts.release,
            (facts.osbuilder.get("agent") or {}).get("agent-is-init-daemon") == "yes")
        data.assets.append({"file": asset.file, "kind": asset.role, "size": path.stat().st_size,
                            "budget": budgets.get(asset.kind) if pinned else None, "free": free,
                            "budget_note": "no budget" if versions is None or asset.kind not in budgets else
                            f"no budget: not the pinned {asset.kind} ({facts.distro} {facts.release})"})
    image = next((asset for asset in assets if asset.role == "image"), None) or \
        next((asset for asset in assets if asset.kind == "image"), None)
    if image is not None:
        data.image_name = Path(image.file).name
        facts = from_asset(kata / image.file, "image")
        data.packages_by_size = installed_sizes(facts.dpkg_status)[:TOP]
        data.directories_by_size = directory_sizes(_image_tree(kata / image.file, workdir))[:TOP]
    else:
        data.notes.append("the bundle has no image: no size breakdown")
    data.boots = [_timeline(boot) for boot in boots]
    data.inputs = _inputs(kata, provenance_file)
    data.packages = _sbom_packages(kata, assets)
    return data


def _mib(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / (1 << 20):.1f} MiB" if value >= 1 << 20 else f"{value / 1024:.0f} KiB"


def render(data: ReportData) -> str:
    # Not osbuilder.templating: this one is HTML, so everything it shows is escaped.
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                                     autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    environment.filters["mib"] = _mib
    longest = max([0.0, *(value for boot in data.boots for value in boot["timings"].values() if value is not None)])
    return environment.get_template("report.html.j2").render(
        data=data, osbuilder_version=__version__, timeline_keys=TIMELINE_KEYS, longest=longest or 1.0,
    )


def write_report(bundle: Path, output: Path, *, boots: list[dict[str, Any]], versions: Versions | None = None,
                 provenance_file: Path | None = None) -> ReportData:
    from osbuilder.outputs import write_atomically

    workdir = Path(tempfile.mkdtemp(prefix="osb-report-"))
    try:
        data = gather(bundle, workdir, boots=boots, versions=versions, provenance_file=provenance_file)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write_atomically(output, render(data).encode())
    return data


