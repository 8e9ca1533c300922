"""The schema of versions.yaml's `budgets` section (osbuilder.evidence.budgets reads it)."""

from __future__ import annotations

from osbuilder.yamlconfig import Field, MapOf, Obj, Str, Text

SIZE_PATTERN = r"\d+(\.\d+)? ?(B|KiB|MiB|GiB)?"
SECONDS_PATTERN = r"\d+(\.\d+)?"
ACCELERATORS = ("tcg", "kvm")


def _size() -> Str:
    return Str(pattern=SIZE_PATTERN, hint='a size such as "160 MiB", "128 KiB" or a number of bytes')


def _seconds() -> Str:
    return Str(pattern=SECONDS_PATTERN, hint='seconds, quoted, e.g. "12"')


_F = Field
AGENT_READY = Obj({accel: _F(_seconds()) for accel in ACCELERATORS}, name="agent-ready budget")
ASSET_BUDGETS = Obj(
    {
        "image": _F(Obj({"size": _F(_size()), "free": _F(_size()), "agent-ready": _F(AGENT_READY)}, name="image budget")),
        "initrd": _F(Obj({"size": _F(_size()), "agent-ready": _F(AGENT_READY)}, name="initrd budget")),
        "kernel": _F(Obj({"size": _F(_size())}, name="kernel budget")),
        "agent": _F(Obj({"size": _F(_size())}, name="agent budget")),
    },
    name="budgets of an architecture",
)
SCHEMA = Obj({"description": _F(Text(), True), "notes": _F(Text()), "architecture": _F(MapOf(ASSET_BUDGETS), True)},
             name="budgets section")
