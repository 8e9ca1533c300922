"""`osbuilder run`'s bad input: every case exits 2 naming the option, before anything boots (the assets
here only pass the launcher's checks: a bzImage header and a zstd frame, nothing that could run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.fixture
def fake_assets(tmp_path: Path) -> list[str]:
    kernel = bytearray(4096)
    kernel[0x1FE:0x200] = b"\x55\xaa"
    kernel[0x202:0x206] = b"HdrS"
    (tmp_path / "bzImage").write_bytes(bytes(kernel))
    (tmp_path / "initrd.zst").write_bytes(b"\x28\xb5\x2f\xfd" + bytes(64))
    (tmp_path / "root").mkdir()
    return ["--kernel", str(tmp_path / "bzImage"), "--initrd", str(tmp_path / "initrd.zst"), "--rootfs",
            str(tmp_path / "root"), "--transport", "serial", "--accel", "tcg"]


@pytest.mark.parametrize(("options", "where", "words"), [
    (["--timeout", "0"], "--timeout 0", "more than 0"),
    (["--stdin", "/no/such/file"], "--stdin /no/such/file", "not a readable file"),
    (["--virtiofsd", "/bin/true"], "--virtiofsd /bin/true", "not a virtiofsd"),
])
def test_bad_options_are_exit_2_before_anything_starts(fake_assets: list[str], options: list[str], where: str,
                                                        words: str, tmp_path: Path) -> None:
    result = run_cli("run", *fake_assets, *options, "--json", "--", "true",
                     env={"OSBUILDER_RUN_DIR": str(tmp_path / "run")}, timeout=60)
    assert result.returncode == 2, result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["where"] == where and words in error["problem"]
    assert not (tmp_path / "run").exists()  # no sandbox was started


def test_no_command_anywhere_names_process_args(fake_assets: list[str], tmp_path: Path) -> None:
    """A spec with empty args and nothing after --: nothing to run."""
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "process": {"args": [], "cwd": "/"},
                                                    "root": {"path": "rootfs"}}))
    options = [option for option in fake_assets if option not in ("--rootfs", str(tmp_path / "root"))]
    result = run_cli("run", *options, "--oci-bundle", bundle, "--", timeout=60)
    assert result.returncode == 2 and "process.args" in result.stderr and "no command to run" in result.stderr
