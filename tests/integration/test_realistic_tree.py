"""A realistic tree: a real static busybox as the agent-init, and the host's Python standard library
(thousands of files, deep directories, compiled modules)."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from osbuilder.image.builder import ImageOptions, build_image
from osbuilder.initrd.builder import InitrdOptions, build_initrd
from tests.conftest import run_cli
from tests.helpers.trees import EPOCH, make_rootfs, tree_paths

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def realistic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")
    root = make_rootfs(tmp_path_factory.mktemp("realistic") / "rootfs", agent_init=True, large_directory=10)
    (root / "usr/sbin/init").unlink()
    shutil.copy2(busybox, root / "usr/sbin/init")
    # Debian's standard library (about 50 MB, 1500 entries); not a pyenv one, which carries its
    # site-packages and test suite (900 MB).
    candidates = sorted(Path("/usr/lib").glob("python3.[0-9]*"))
    stdlib = candidates[0] if candidates else Path(sysconfig.get_paths()["stdlib"])
    subprocess.run(["cp", "-a", stdlib, root / "usr/lib" / stdlib.name], check=True)
    return root


def test_realistic_image_and_initrd(realistic: Path, tmp_path: Path) -> None:
    image = tmp_path / "kata.img"
    result = build_image(realistic, ImageOptions(output=image, agent_init=True, source_date_epoch=EPOCH,
                                                 alignment_mb=2))
    offset = result.layout.root.offset
    subprocess.run(["e2fsck", "-fn", f"{image}?offset={offset}"], check=True, capture_output=True)
    # The estimate against what mke2fs really used: never short, and close.
    used = result.filesystem.blocks - int(result.filesystem.details["free_blocks"])  # type: ignore[call-overload]
    estimate = result.sizing["geometry"]["overhead_blocks"] + result.sizing["tree"]["blocks"]  # type: ignore[index]
    assert used <= estimate < used * 1.03 + 64
    init = subprocess.run(["debugfs", "-R", "dump /sbin/init " + str(tmp_path / "init"), f"{image}?offset={offset}"],
                          capture_output=True)
    assert init.returncode == 0 and (tmp_path / "init").read_bytes() == (realistic / "usr/sbin/init").read_bytes()

    initrd = tmp_path / "initrd.img"
    build_initrd(realistic, InitrdOptions(output=initrd, agent_init=True, source_date_epoch=EPOCH))
    raw = subprocess.run(["zstd", "-dc", initrd], capture_output=True, check=True).stdout
    names = subprocess.run(["cpio", "-t", "--quiet"], input=raw, capture_output=True, check=True).stdout.decode()
    listed = {name.removeprefix("./") for name in names.splitlines()[1:]}
    assert listed == tree_paths(realistic) | {"init"}
    report = run_cli("inspect", initrd)
    assert report.returncode == 0 and "agent: /usr/sbin/init" in report.stdout

    erofs = tmp_path / "erofs.img"
    build_image(realistic, ImageOptions(output=erofs, fs_type="erofs", agent_init=True, source_date_epoch=EPOCH))
    assert run_cli("inspect", erofs).returncode == 0
