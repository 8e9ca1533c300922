"""Regenerate the protobuf modules that live next to the .proto files in ``protos/``.

    python -m osbuilder.ttrpc.regenerate            # rewrite protos/*_pb2.py and *_pb2.pyi
    python -m osbuilder.ttrpc.regenerate --check    # exit 1 when the committed files are stale

The generator is ``grpc_tools.protoc`` (PyPI ``grpcio-tools``). The .proto files are compiled with the
repository root as include path, so their descriptor names are ``osbuilder/ttrpc/protos/<name>.proto``
(unique in the process-wide descriptor pool) and the output lands next to the sources.

Generated ``*_pb2.py`` files check the protobuf runtime at import: the runtime must not be older than
the gencode version written in their header (``# Protobuf Python Version: X.Y.Z``).
"""

from __future__ import annotations

import argparse
import importlib.resources
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent / "protos"
# The directory that contains the top-level ``osbuilder`` package.
INCLUDE_ROOT = PROTO_DIR.parents[2]
PROTO_FILES = ("ttrpc.proto", "health.proto", "types.proto", "oci.proto", "agent.proto")
# The sources of the generated modules (osbuilder.codegraph hashes what a module declares here; a
# literal, as codegraph reads it without importing).
DATA_FILES = ("ttrpc/protos/ttrpc.proto", "ttrpc/protos/health.proto", "ttrpc/protos/types.proto",
              "ttrpc/protos/oci.proto", "ttrpc/protos/agent.proto")
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi")

# Prepended to every generated file: the code is not ours to lint or type-check (protoc's stubs use
# bare generics), and it says how to regenerate it.
GENERATED_HEADER = (
    "# ruff: noqa\n"
    "# mypy: ignore-errors\n"
    "# Generated from the .proto file of the same name; regenerate with\n"
    "# `python -m osbuilder.ttrpc.regenerate` instead of editing.\n"
)

_VERSION_RE = re.compile(r"^# Protobuf Python Version: (\S+)$", re.MULTILINE)
_DESCRIPTOR_RE = re.compile(rb"AddSerializedFile\((b'.*?')\)", re.DOTALL)


class GeneratorUnavailable(RuntimeError):
    """grpc_tools (PyPI grpcio-tools) is not installed."""


@dataclass(frozen=True)
class Mismatch:
    name: str
    reason: str


def generated_names() -> list[str]:
    return [Path(p).stem + s for p in PROTO_FILES for s in GENERATED_SUFFIXES]


def generate(out_root: Path) -> Path:
    """Compiles the .proto files into ``out_root``; returns the directory holding the output."""
    try:
        from grpc_tools import protoc  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise GeneratorUnavailable("grpc_tools is not installed (pip install grpcio-tools)") from exc
    well_known = Path(str(importlib.resources.files("grpc_tools") / "_proto"))
    args = [
        "grpc_tools.protoc",
        f"--proto_path={INCLUDE_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        *[str(PROTO_DIR / name) for name in PROTO_FILES],
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit status {rc}: {' '.join(args)}")
    out_dir = out_root / PROTO_DIR.relative_to(INCLUDE_ROOT)
    for name in generated_names():
        path = out_dir / name
        path.write_text(GENERATED_HEADER + path.read_text())
    return out_dir


def generator_version(text: str) -> str | None:
    m = _VERSION_RE.search(text)
    return m.group(1) if m else None


def compare(fresh_dir: Path, committed_dir: Path = PROTO_DIR) -> list[Mismatch]:
    """Compares freshly generated files with the committed ones.

    With the same generator version the files must be byte-identical. With another grpcio-tools the
    surrounding code may legitimately differ, so only the embedded serialized descriptors (which hold
    every message, field number and type) must match.
    """
    problems: list[Mismatch] = []
    for name in generated_names():
        new_p, old_p = fresh_dir / name, committed_dir / name
        if not old_p.exists():
            problems.append(Mismatch(name, "not committed"))
            continue
        new, old = new_p.read_bytes(), old_p.read_bytes()
        if new == old:
            continue
        if not name.endswith(".py"):
            # .pyi stubs: exact only with the same generator, judged through the matching .py file
            if generator_version(new_p.with_suffix(".py").read_text()) == generator_version(
                old_p.with_suffix(".py").read_text()
            ):
                problems.append(Mismatch(name, "differs"))
            continue
        new_v, old_v = generator_version(new.decode()), generator_version(old.decode())
        if new_v == old_v:
            problems.append(Mismatch(name, "differs"))
            continue
        new_d, old_d = _DESCRIPTOR_RE.search(new), _DESCRIPTOR_RE.search(old)
        if not new_d or not old_d or new_d.group(1) != old_d.group(1):
            problems.append(Mismatch(name, f"descriptor differs (generator {new_v}, committed {old_v})"))
    return problems


def check() -> list[Mismatch]:
    with tempfile.TemporaryDirectory(prefix="osb-protos-") as tmp:
        return compare(generate(Path(tmp)))


def regenerate() -> list[Path]:
    with tempfile.TemporaryDirectory(prefix="osb-protos-") as tmp:
        fresh = generate(Path(tmp))
        written = []
        for name in generated_names():
            data = (fresh / name).read_bytes()
            dest = PROTO_DIR / name
            if not dest.exists() or dest.read_bytes() != data:
                dest.write_bytes(data)
                written.append(dest)
        return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m osbuilder.ttrpc.regenerate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the committed files are current")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = check()
            for p in problems:
                print(f"{PROTO_DIR / p.name}: {p.reason}", file=sys.stderr)
            return 1 if problems else 0
        for path in regenerate():
            print(f"wrote {path}")
    except GeneratorUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
