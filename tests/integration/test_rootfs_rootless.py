"""A rootfs built without root: an unprivileged user with subordinate ids runs the native backend
(mmdebstrap in unshare mode), and osbuilder.userns gives back the guest's view of the tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from osbuilder import userns
from tests.conftest import ROOTFS_SDE, BuiltRootfs
from tests.helpers import rootless
from tests.helpers.rootfsinspect import tree_listing

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are private to root.
    path = Path(tempfile.mkdtemp(prefix="osbuilder-rootless-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture(scope="module")
def user(workdir: Path) -> rootless.Rootless:
    if os.geteuid() != 0:
        pytest.skip("creating the unprivileged test user needs root")
    try:
        prepared = rootless.prepare(workdir)
    except LookupError as error:
        pytest.skip(str(error))
    probe = prepared.run(["unshare", "--user", "--map-root-user", "true"])
    if probe.returncode != 0:
        pytest.skip(f"unprivileged user namespaces are disabled here: {probe.stderr.strip()}")
    return prepared


def _ownership(tree: Path, idmap: userns.IdMap) -> dict[str, tuple[str, int, int, int]]:
    """path -> (type, mode, guest uid, guest gid)."""
    listing = {}
    for path in [tree, *tree.rglob("*")]:
        info = path.lstat()
        kind = "l" if path.is_symlink() else "d" if path.is_dir() else "f"
        uid, gid = idmap.to_guest(info.st_uid, info.st_gid)
        listing[str(path.relative_to(tree))] = (kind, info.st_mode & 0o7777, uid, gid)
    return listing


def test_rootless_native_build(user: rootless.Rootless, workdir: Path, bookworm_agent_rootfs: BuiltRootfs,
                               test_agent: Path) -> None:
    cache, out = workdir / "cache", workdir / "out"
    out.mkdir()
    # Start from the packages the root build downloaded; the user's cache is its own.
    shutil.copytree(bookworm_agent_rootfs.cache / "apt-archives", cache / "apt-archives")
    agent = workdir / "kata-agent"
    shutil.copyfile(test_agent, agent)
    agent.chmod(0o755)
    rootless.give(cache, user)
    rootless.give(out, user)
    output = out / "rootfs"
    args = [arg if arg != str(test_agent) else str(agent) for arg in bookworm_agent_rootfs.args]
    result = user.osbuilder("--cache-dir", str(cache), "build-rootfs", *args, "-o", str(output), "--json",
                            env={"SOURCE_DATE_EPOCH": ROOTFS_SDE})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["backend"], report["mode"]) == ("native", "unshare")
    assert report["agent_sha256"] == bookworm_agent_rootfs.report["agent_sha256"]

    # Owned by the user's subordinate ids, exactly as the root build is owned by real ids.
    uids, gids = userns.subid_range("uid", user.uid), userns.subid_range("gid", user.uid)
    assert uids is not None and gids is not None
    assert output.stat().st_uid == uids.outer and (output / "etc/passwd").stat().st_uid == uids.outer
    idmap = userns.IdMap(userns.SUBID_KIND, (uids,), (gids,))
    root_built = _ownership(bookworm_agent_rootfs.path, userns.IDENTITY)
    assert _ownership(output, idmap) == root_built
    assert any(gid not in (0,) for _kind, _mode, _uid, gid in root_built.values())  # more than root inside
    # The cache entry is an ordinary file of the user's.
    entry = cache / "rootfs" / report["cache_key"] / "rootfs.tar"
    assert (entry.stat().st_uid, entry.stat().st_gid) == (user.uid, user.gid)
    # A cache hit, unpacked in the user's namespace (in two tar processes), gives the same tree.
    again = user.osbuilder("--cache-dir", str(cache), "build-rootfs", *args, "-o", str(out / "again"), "--json",
                           env={"SOURCE_DATE_EPOCH": ROOTFS_SDE})
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["cache_hit"] is True
    assert tree_listing(out / "again") == tree_listing(output)
    userns_remove = user.run([user.python, "-c", "from pathlib import Path; from osbuilder import userns; "
                              f"userns.remove_tree(Path({str(out / 'again')!r}))"])
    assert userns_remove.returncode == 0, userns_remove.stderr

    # The shared helpers, as the user: detect the map, see guest ownership, remove the tree.
    script = f"""
import json, sys
from pathlib import Path
from osbuilder import runner, userns
tree = Path({str(output)!r})
idmap = userns.detect(tree)
seen = runner.run(userns.wrap(["stat", "-c", "%u:%g", tree / "etc/passwd", tree / "var/mail"], idmap)).stdout
userns.remove_tree(tree)
print(json.dumps({{"kind": idmap.kind, "seen": seen.split(), "left": tree.exists()}}))
"""
    helper = user.run([user.python, "-c", script])
    assert helper.returncode == 0, helper.stderr
    view = json.loads(helper.stdout)
    mail_gid = os.stat(bookworm_agent_rootfs.path / "var/mail").st_gid
    assert view == {"kind": userns.SUBID_KIND, "seen": ["0:0", f"0:{mail_gid}"], "left": False}
    assert subprocess.run(["ls", "-A", str(out)], capture_output=True, text=True).stdout == ""
