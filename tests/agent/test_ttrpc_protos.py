"""The committed *_pb2.py / *_pb2.pyi files are what the committed .proto files generate."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from osbuilder.ttrpc import regenerate


def test_generated_files_are_current(tmp_path: Path) -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpc_tools (grpcio-tools) is not installed")
    fresh = regenerate.generate(tmp_path)
    assert sorted(p.name for p in fresh.iterdir()) == sorted(regenerate.generated_names())
    problems = regenerate.compare(fresh)
    assert not problems, (
        "generated protobuf modules are stale; run `python -m osbuilder.ttrpc.regenerate`: "
        + ", ".join(f"{p.name} ({p.reason})" for p in problems)
    )


def test_compare_detects_a_changed_descriptor(tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    fake.mkdir()
    for name in regenerate.generated_names():
        (fake / name).write_bytes((regenerate.PROTO_DIR / name).read_bytes())
    target = fake / "health_pb2.py"
    target.write_bytes(target.read_bytes().replace(b"NOT_SERVING", b"NOT_SERVINX"))
    assert [p.name for p in regenerate.compare(fake)] == ["health_pb2.py"]
    # another generator version: only the embedded descriptor matters
    text = target.read_text().replace("# Protobuf Python Version: ", "# Protobuf Python Version: 0.")
    target.write_text(text)
    assert [p.name for p in regenerate.compare(fake)] == ["health_pb2.py"]


def test_every_proto_has_generated_modules() -> None:
    protos = sorted(p.name for p in regenerate.PROTO_DIR.glob("*.proto"))
    assert protos == sorted(regenerate.PROTO_FILES)
    for name in regenerate.generated_names():
        assert (regenerate.PROTO_DIR / name).is_file(), name
