"""Size and boot-time budgets (versions.yaml `budgets`), checked by the build commands and `boot`.

Why versions.yaml and not a recipe: a budget belongs to the release's assets, per architecture, as
the distribution pins in `assets.image` and `assets.initrd` do; a recipe describes a distribution
across releases, and the kernel and the agent have no recipe. A size budget of an image or initrd
applies to the pinned asset (its distribution, release and init mode for the architecture); the
kernel, agent and boot-time budgets to every build on that architecture.

Sizes are strings with a unit ("160 MiB", "128 KiB", or bytes); `free` is the least free space the
image's filesystem must keep. Times are seconds from QEMU's start to the agent's first answer,
per accelerator. `--no-budgets` turns the checks off.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osbuilder.errors import BuildError, ConfigError, UsageError
from osbuilder.modes import InitMode
from osbuilder.versions import Versions
from osbuilder.versions_budgets import UNITS, parse_size


def human(size: int) -> str:
    for unit in ("GiB", "MiB", "KiB"):
        if size >= UNITS[unit]:
            return f"{size / UNITS[unit]:.1f} {unit} ({size} bytes)"
    return f"{size} bytes"


@dataclass(frozen=True)
class Limit:
    value: float  # bytes or seconds
    where: str  # versions.yaml:line (budgets.architecture.<arch>.<asset>.<key>)
    path: str  # the dotted key


def limit(versions: Versions, arch: str, asset: str, key: str, accel: str | None = None) -> Limit | None:
    """The budget for (architecture, asset, key[, accelerator]), or None when none is set."""
    section = versions.budgets.of(arch) if versions.budgets is not None else None
    node: Any = getattr(section, asset, None) if section is not None else None
    attribute = key.replace("-", "_")
    if accel is not None:
        node = getattr(node, attribute, None)
        attribute = accel
    value = getattr(node, attribute, None) if node is not None else None
    if value is None:
        return None
    path = [*node.key.split("."), key if accel is None else accel]
    where = versions.document.where(*path) if versions.document is not None else versions.path
    figure = float(value) if key == "agent-ready" else float(parse_size(value))
    return Limit(figure, f"{where} ({'.'.join(path)})", ".".join(path))


def applies_to_pinned(versions: Versions, asset: str, arch: str, distro: str, release: str, agent_init: bool) -> bool:
    """Size budgets of an image or initrd are for the pinned asset of versions.yaml."""
    try:
        pin = versions.distro_pin(asset, arch)
    except (ConfigError, UsageError):
        return False
    return (pin.distro, pin.release, pin.init is InitMode.AGENT) == (distro, release, agent_init)


@dataclass(frozen=True)
class Contributor:
    name: str
    size: int


def exceeded(what: str, figure: int, budget: Limit, contributors: Sequence[tuple[str, Sequence[Contributor]]],
             kept: Path | None) -> BuildError:
    lines = [f"{what} is {human(figure)}, over its budget of {human(int(budget.value))} by "
             f"{human(figure - int(budget.value))}"]
    for title, items in contributors:
        if items:
            lines.append(f"largest {title}: " + ", ".join(f"{item.name} {human(item.size)}" for item in items))
    if kept is not None:
        lines.append(f"{kept} was written and is kept for inspection")
    return BuildError(problem="\n    ".join(lines), where=budget.where,
                      fix=f"make it smaller, raise {budget.path} in versions.yaml, or pass --no-budgets")


def free_too_small(figure: int, budget: Limit, kept: Path) -> BuildError:
    return BuildError(problem=f"the image's filesystem keeps {human(figure)} free, less than its budget of "
                              f"{human(int(budget.value))}; {kept} was written and is kept for inspection",
                      where=budget.where, fix=f"give --root-free-space, lower {budget.path}, or pass --no-budgets")


def elf_sections(path: Path, top: int = 6) -> list[Contributor]:
    """The largest sections of an ELF64 file (what makes a kernel or the agent big)."""
    with path.open("rb") as handle:
        header = handle.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:
            return []
        shoff, = struct.unpack_from("<Q", header, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", header, 0x3A)
        handle.seek(shoff)
        table = handle.read(shentsize * shnum)
        entries = [struct.unpack_from("<IIQQQQ", table, index * shentsize) for index in range(shnum)]
        if not entries or shstrndx >= len(entries):
            return []
        handle.seek(entries[shstrndx][4])
        names = handle.read(entries[shstrndx][5])
    sections = [Contributor(names[name:names.index(b"\0", name)].decode(errors="replace"), size)
                for name, _type, _flags, _addr, _offset, size in entries if size]
    return sorted(sections, key=lambda item: (-item.size, item.name))[:top]


def tree_contributors(rootfs: Path, top: int = 6) -> list[tuple[str, list[Contributor]]]:
    """The largest packages (dpkg's installed size) and directories of a rootfs tree."""
    from osbuilder.evidence.sizes import directory_sizes, installed_sizes

    status = rootfs / "var/lib/dpkg/status"
    packages = installed_sizes(status.read_text(errors="replace") if status.is_file() else None)[:top]
    directories = directory_sizes(rootfs)[:top]
    return [("packages", [Contributor(bar.label, bar.value) for bar in packages]),
            ("directories", [Contributor(bar.label, bar.value) for bar in directories])]


def check_boot(versions: Versions, arch: str, kind: str, accel: str, agent_ready: float | None) -> str | None:
    """Why a boot is over its time budget, or None."""
    budget = limit(versions, arch, kind, "agent-ready", accel)
    if budget is None or agent_ready is None or agent_ready <= budget.value:
        return None
    return (f"the agent answered {agent_ready:.2f} s after QEMU started, over the {kind} budget of "
            f"{budget.value:g} s under {accel.upper()} ({budget.where}); raise it or pass --no-budgets")


# --- the commands' hooks ----------------------------------------------------------------------------

def check_file(versions: Versions, arch: str, asset: str, path: Path, contributors: Sequence[tuple[str, Sequence[
        Contributor]]] = ()) -> None:
    """A kernel or agent file against its size budget (its largest ELF sections as contributors)."""
    budget = limit(versions, arch, asset, "size")
    size = path.stat().st_size
    if budget is not None and size > budget.value:
        raise exceeded(f"the {asset} {path.name}", size, budget,
                       contributors or [("ELF sections", elf_sections(path))], path)


def check_rootfs_asset(versions: Versions, arch: str, kind: str, rootfs: Path, asset: Path,
                       free: int | None = None, kept: Path | None = None) -> None:
    """An image or initrd built from `rootfs` against the budgets of the pinned asset (the tree's
    own architecture, as its osbuilder.yaml records it, wins over `arch`); `kept`: where the asset
    is kept for inspection, when not at `asset`."""
    import yaml

    from osbuilder.metadata import OSBUILDER_YAML

    metadata_file = rootfs / OSBUILDER_YAML
    if not metadata_file.is_file():
        return  # not a tree osbuilder built: no pinned asset to compare with
    metadata = yaml.safe_load(metadata_file.read_text()) or {}
    distro = metadata.get("base-distro") or {}
    agent_init = (metadata.get("agent") or {}).get("agent-is-init-daemon") == "yes"
    tree_arch = str(metadata.get("architecture") or arch)
    check_asset(versions, tree_arch, kind, asset, (str(distro.get("name")), str(distro.get("version")), agent_init),
                free, lambda: tree_contributors(rootfs), kept)


def check_asset(versions: Versions, arch: str, kind: str, asset: Path, made_as: tuple[str, str, bool],
                free: int | None, contributors: Callable[[], Sequence[tuple[str, Sequence[Contributor]]]] = list,
                kept: Path | None = None) -> None:
    """An image or initrd made as (distro, release, agent as init) against the budgets of the pinned
    asset, if it is that one. A cache hit has no rootfs to name contributors from."""
    from osbuilder.arch import parse_arch

    arch = parse_arch(arch).name  # amd64, arm64: the budgets are by osbuilder's names
    if not applies_to_pinned(versions, kind, arch, *made_as):
        return
    kept = kept or asset
    budget = limit(versions, arch, kind, "size")
    size = asset.stat().st_size
    if budget is not None and size > budget.value:
        raise exceeded(f"the {kind} {kept.name}", size, budget, contributors(), kept)
    minimum = limit(versions, arch, kind, "free") if kind == "image" else None
    if minimum is not None and free is not None and free < minimum.value:
        raise free_too_small(free, minimum, kept)
