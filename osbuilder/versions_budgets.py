"""versions.yaml's `budgets` section as frozen dataclasses (part of the Versions tree; the schema is
derived from them): size limits of the release's assets and agent-ready limits per accelerator, per
architecture. osbuilder.evidence.budgets checks them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from osbuilder.arch import ARCHES
from osbuilder.yamlconfig import Str, Text, entry_name, location, setting

UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
SIZE_PATTERN = r"(?P<number>\d+(?:\.\d+)?) ?(?P<unit>B|KiB|MiB|GiB)?"
SIZE = Str(pattern=SIZE_PATTERN, hint='a size such as "160 MiB", "128 KiB" or a number of bytes')
SECONDS = Str(pattern=r"\d+(\.\d+)?", hint='seconds, quoted, e.g. "12"')


def parse_size(text: str) -> int:
    match = re.fullmatch(SIZE_PATTERN, text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    return int(float(match["number"]) * UNITS[match["unit"] or ""])


@dataclass(frozen=True, kw_only=True)
class AgentReady:
    """Seconds from QEMU's start to the agent's first answer, per accelerator."""

    YAML_NAME: ClassVar[str] = "agent-ready budget"

    key: str = location()
    tcg: str | None = setting(SECONDS, default=None)
    kvm: str | None = setting(SECONDS, default=None)


@dataclass(frozen=True, kw_only=True)
class InitrdBudget:
    """A guest root's size and the time to agent-ready of its boots."""

    YAML_NAME: ClassVar[str] = "initrd budget"

    key: str = location()
    size: str | None = setting(SIZE, default=None)
    agent_ready: AgentReady | None = setting(default=None)


@dataclass(frozen=True, kw_only=True)
class ImageBudget(InitrdBudget):
    YAML_NAME: ClassVar[str] = "image budget"

    free: str | None = setting(SIZE, default=None)  # the least free space the image's filesystem keeps


@dataclass(frozen=True, kw_only=True)
class FileBudget:
    """A kernel's or an agent's size."""

    YAML_NAME: ClassVar[str] = "file budget"

    key: str = location()
    size: str | None = setting(SIZE, default=None)


@dataclass(frozen=True, kw_only=True)
class ArchBudgets:
    YAML_NAME: ClassVar[str] = "budgets of an architecture"

    arch: str = entry_name()
    image: ImageBudget | None = setting(default=None)
    initrd: InitrdBudget | None = setting(default=None)
    kernel: FileBudget | None = setting(default=None)
    agent: FileBudget | None = setting(default=None)


@dataclass(frozen=True, kw_only=True)
class Budgets:
    YAML_NAME: ClassVar[str] = "budgets section"

    description: str = setting(Text())
    notes: str | None = setting(Text(), default=None)
    architecture: tuple[ArchBudgets, ...] = setting(key_pattern="|".join(ARCHES),
                                                    key_hint="uname -m architecture name (" + ", ".join(ARCHES) + ")")

    def of(self, arch: str) -> ArchBudgets | None:
        return next((entry for entry in self.architecture if entry.arch == arch), None)
