"""arm64 end to end from an x86_64 host (marker `cross`: in `make test`, alone with `make test-cross`):
a Debian bookworm rootfs bootstrapped through qemu-user with the cross-built agent as init,
reproducible, rootless and with the docker backend; an archive without arm64 refused; its image
(virtio-blk, no DAX) and initrd booted under qemu-system-aarch64 (TCG) to SERVING with the arm64
kernel; and a container run from an arm64 container root.

The kernel, the rootfs trees and their packages come from the user's cache (as the other tiers'
do); the reproducibility, rootless and docker builds run every time. A cold run also builds the
arm64 kernel (about 11 minutes on 2 cores) and downloads the arm64 packages"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from osbuilder.image.builder import ImageOptions, build_image
from osbuilder.initrd.builder import InitrdOptions, build_initrd
from osbuilder.kernel.build import KernelBuild, KernelOptions
from osbuilder.rootfs.agent import elf_arch
from tests.conftest import ROOTFS_SDE, BuiltRootfs, build_rootfs, run_cli
from tests.helpers.fakearchive import make_key, private_distros, publish_release
from tests.helpers.httpserver import FixtureServer
from tests.helpers.rootfsinspect import dpkg_packages

pytestmark = [pytest.mark.cross, pytest.mark.integration, pytest.mark.slow]

ARM64_AGENT_INIT = ("--distro", "debian", "--os-version", "bookworm", "--arch", "aarch64", "--agent-init")
ARM64_CONTAINER = ("--distro", "debian", "--os-version", "bookworm", "--arch", "aarch64", "--container")
BOOT_TIMEOUT = 600  # seconds: an emulated arm64 guest reaches its agent in well under a minute


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _built(cache: Path, output: Path, args: tuple[str, ...]) -> BuiltRootfs:
    result = build_rootfs(cache, output, *args)
    assert result.returncode == 0, result.stderr
    return BuiltRootfs(output, json.loads(result.stdout), cache, args)


@pytest.fixture(autouse=True)
def _arm64_emulation() -> None:
    """The tier needs an x86_64 host that runs arm64 programs. As root, `make test` registers the
    handler first (`make binfmt`), so a missing one fails the tests there; an unprivileged run that
    could not register it is skipped, with the fix."""
    from osbuilder.arch import ARCHES
    from osbuilder.binfmt import emulation

    if os.uname().machine != "x86_64":
        pytest.skip("the cross tier builds aarch64 on an x86_64 host")
    state = emulation(ARCHES["aarch64"])
    if not state.ok and os.geteuid() != 0:
        pytest.skip(f"{state.problem}; as root: {state.fix}")


@pytest.fixture(scope="module")
def arm64_kernel(tmp_path_factory: pytest.TempPathFactory) -> KernelBuild:
    from tests.helpers.kernel import build_with, user_context

    if os.uname().machine != "x86_64":
        pytest.skip("the cross tier builds aarch64 on an x86_64 host")
    return build_with(user_context(), KernelOptions(arch="aarch64", output_dir=tmp_path_factory.mktemp("arm64-kernel")))


@pytest.fixture(scope="module")
def arm64_rootfs(tmp_path_factory: pytest.TempPathFactory, rootfs_cache: Path) -> BuiltRootfs:
    return _built(rootfs_cache, tmp_path_factory.mktemp("arm64") / "rootfs", ARM64_AGENT_INIT)


@pytest.fixture(scope="module")
def arm64_assets(tmp_path_factory: pytest.TempPathFactory, arm64_rootfs: BuiltRootfs) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("arm64-assets")
    image = build_image(arm64_rootfs.path, ImageOptions(output=out / "kata-containers.img", agent_init=True))
    initrd = build_initrd(arm64_rootfs.path, InitrdOptions(output=out / "kata-containers-initrd.img", agent_init=True))
    return {"image": image.path, "initrd": initrd.path}


def _boot(kernel: Path, *args: str | os.PathLike[str]) -> tuple[int, dict[str, Any]]:
    result = run_cli("boot", "--arch", "aarch64", "--kernel", kernel, "--transport", "serial",
                     "--timeout", str(BOOT_TIMEOUT), "--json", *args, timeout=BOOT_TIMEOUT + 120)
    assert result.stdout, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, report


def _assert_served(report: dict[str, Any], version: str) -> None:
    assert report["ok"] is True, (report.get("error"), report.get("console_tail"))
    assert report["agent"]["status"] == "SERVING" and report["agent"]["version"] == version
    assert report["guest_details"]["agent_version"] == version
    assert report["guest_details"]["init_daemon"] is True  # the agent is PID 1
    assert report["accel"] == "tcg" and report["transport"] == "serial"
    assert report["dax"] is not True and "console=ttyAMA0" in report["cmdline"].split()


def test_arm64_rootfs_is_arm64_and_reproducible(arm64_rootfs: BuiltRootfs, tmp_path: Path) -> None:
    report, tree = arm64_rootfs.report, arm64_rootfs.path
    assert report["arch"] == "aarch64" and report["mode"] == "root"
    agent = (tree / "sbin/init").resolve() if (tree / "sbin/init").is_symlink() else tree / "sbin/init"
    assert elf_arch(agent.read_bytes()) == "aarch64"
    assert "ARM aarch64" in subprocess.run(["file", "-b", str(agent)], capture_output=True, text=True).stdout
    status = (tree / "var/lib/dpkg/status").read_text()
    assert "Architecture: arm64" in status and "Architecture: amd64" not in status
    metadata = (tree / "var/lib/osbuilder/osbuilder.yaml").read_text()
    assert 'architecture: "aarch64"' in metadata
    # Built twice from nothing but the package cache (SOURCE_DATE_EPOCH fixed): the same tarball, and
    # the one the cache held (which another commit may have built: only the code's digest is recorded).
    entry = arm64_rootfs.cache / "rootfs" / report["cache_key"] / "rootfs.tar"
    digests = [_sha256(entry)]
    for name in ("first", "second"):
        rebuilt = build_rootfs(arm64_rootfs.cache, tmp_path / name, *arm64_rootfs.args, "--no-cache")
        assert rebuilt.returncode == 0, rebuilt.stderr
        data = json.loads(rebuilt.stdout)
        assert data["cache_hit"] is False and data["cache_key"] == report["cache_key"]
        digests.append(_sha256(entry))
    assert digests[0] == digests[1] == digests[2]


def test_arm64_docker_backend_builds_the_same_tree(arm64_rootfs: BuiltRootfs, base_image: str, engine: Any,
                                                   tmp_path: Path) -> None:
    """The docker backend: mmdebstrap in the (x86_64) builder container, with the image's arch-test,
    runs the arm64 maintainer scripts through the host's binfmt handler (F flag). Built, not taken
    from the cache: the same packages and the same agent as the native build."""
    output = tmp_path / "rootfs"
    result = build_rootfs(arm64_rootfs.cache, output, *ARM64_AGENT_INIT, "--backend", "docker", "--docker-base",
                          base_image, "--no-cache")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert (report["backend"], report["mode"], report["arch"], report["cache_hit"]) == ("docker", "docker", "aarch64",
                                                                                        False)
    assert report["agent_sha256"] == arm64_rootfs.report["agent_sha256"]
    assert elf_arch((output / "sbin/init").read_bytes()) == "aarch64"
    status = (output / "var/lib/dpkg/status").read_text()
    assert "Architecture: arm64" in status and "Architecture: amd64" not in status
    assert dpkg_packages(output) == dpkg_packages(arm64_rootfs.path)
    assert engine.containers.list(all=True, filters={"label": "org.osbuilder.role=rootfs-build"}) == []


def test_an_archive_without_arm64_is_refused_before_any_work(tmp_path: Path) -> None:
    """A mirror whose signed InRelease does not list arm64 (a private archive, served on 127.0.0.1
    with its own key): exit 2 naming the archive and the suite, before the agent is built or
    anything bootstrapped."""
    home = tmp_path / "gnupg"
    keyring = make_key(home, "archive")
    distros = private_distros(tmp_path / "distros", keyring)
    server = FixtureServer().start()
    try:
        mirror = publish_release(server, suite="bookworm", architectures="amd64 i386", signing_home=home)
        cache, output = tmp_path / "cache", tmp_path / "rootfs"
        result = run_cli("--distros-dir", distros, "--cache-dir", cache, "build-rootfs", *ARM64_AGENT_INIT,
                         "--mirror", mirror, "-o", output, "--json")
    finally:
        server.stop()
    assert result.returncode == 2, result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["problem"] == f"the archive {mirror} has no arm64 index for suite bookworm (it lists amd64 i386)"
    assert error["where"] == f"mirror {mirror}" and "OSBUILDER_DEBIAN_MIRROR" in error["fix"]
    assert not output.exists() and not (cache / "agent").exists() and not (cache / "rootfs").exists()


def test_arm64_image_boots_to_serving(arm64_kernel: KernelBuild, arm64_assets: dict[str, Path],
                                      arm64_rootfs: BuiltRootfs) -> None:
    assert "ARM64 boot executable Image" in subprocess.run(["file", "-b", str(arm64_kernel.vmlinux)],
                                                           capture_output=True, text=True).stdout
    code, report = _boot(arm64_kernel.vmlinux, "--image", arm64_assets["image"])
    assert code == 0, report.get("error")
    _assert_served(report, str(arm64_rootfs.report["agent_version"]))
    assert report["nvdimm"] is False and "root=/dev/vda1" in report["cmdline"].split()  # virtio-blk
    assert report["root"]["device"] == "/dev/vda1" and report["root"]["fstype"] == "ext4"


def test_arm64_initrd_boots_to_serving(arm64_kernel: KernelBuild, arm64_assets: dict[str, Path],
                                       arm64_rootfs: BuiltRootfs) -> None:
    code, report = _boot(arm64_kernel.vmlinux, "--initrd", arm64_assets["initrd"])
    assert code == 0, report.get("error")
    _assert_served(report, str(arm64_rootfs.report["agent_version"]))


@pytest.mark.skipif(os.geteuid() != 0, reason="osbuilder run mounts the container's root and starts virtiofsd")
def test_arm64_container_runs_the_example(arm64_kernel: KernelBuild, arm64_assets: dict[str, Path],
                                          rootfs_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    container = _built(rootfs_cache, tmp_path_factory.mktemp("arm64-container") / "rootfs", ARM64_CONTAINER)
    assert container.report["arch"] == "aarch64"
    result = run_cli("run", "--arch", "aarch64", "--kernel", arm64_kernel.vmlinux, "--image", arm64_assets["image"],
                     "--transport", "serial", "--boot-timeout", str(BOOT_TIMEOUT), "--rootfs", container.path, "--",
                     "sh", "-c", "echo hello from the container; uname -m; cat /etc/os-release",
                     timeout=BOOT_TIMEOUT + 120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[:2] == ["hello from the container", "aarch64"], result.stdout
    assert 'VERSION_CODENAME=bookworm' in lines


def _ownership(tree: Path, idmap: Any) -> dict[str, tuple[str, int, int, int]]:
    listing = {}
    for path in [tree, *tree.rglob("*")]:
        info = path.lstat()
        kind = "l" if path.is_symlink() else "d" if path.is_dir() else "f"
        listing[str(path.relative_to(tree))] = (kind, info.st_mode & 0o7777, *idmap.to_guest(info.st_uid, info.st_gid))
    return listing


@pytest.mark.skipif(os.geteuid() != 0, reason="creating the unprivileged test user needs root")
def test_arm64_rootless_build_equals_roots(arm64_rootfs: BuiltRootfs) -> None:
    """An unprivileged user (mmdebstrap in unshare mode, through the same qemu-user) builds the same
    arm64 tree as root: the same files, modes and guest owners, the same agent."""
    from osbuilder import userns
    from osbuilder.agent_build import build_reference_agent, plan_reference_agent
    from osbuilder.arch import ARCHES
    from osbuilder.runner import TOOL_VERSIONS
    from tests.helpers import rootless
    from tests.helpers.kernel import user_context

    context = user_context()
    planned = plan_reference_agent(context.versions.agent_version, context.cache.root / TOOL_VERSIONS,
                                   arch=ARCHES["aarch64"])
    built_agent = build_reference_agent(planned, context.cache)
    workdir = Path(tempfile.mkdtemp(prefix="osbuilder-rootless-arm64-"))  # not under pytest's root-only tmp
    try:
        try:
            user = rootless.prepare(workdir)
        except LookupError as error:
            pytest.skip(str(error))
        cache, out = workdir / "cache", workdir / "out"
        out.mkdir()
        shutil.copytree(arm64_rootfs.cache / "apt-archives", cache / "apt-archives")  # no downloads again
        agent = workdir / "kata-agent"
        shutil.copyfile(built_agent, agent)
        agent.chmod(0o755)
        rootless.give(cache, user)
        rootless.give(out, user)
        result = user.osbuilder("--cache-dir", str(cache), "build-rootfs", *ARM64_AGENT_INIT, "--agent", str(agent),
                                "-o", str(out / "rootfs"), "--json", env={"SOURCE_DATE_EPOCH": ROOTFS_SDE})
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads(result.stdout)
        assert (report["arch"], report["mode"]) == ("aarch64", "unshare")
        assert report["agent_sha256"] == arm64_rootfs.report["agent_sha256"]
        uids, gids = userns.subid_range("uid", user.uid), userns.subid_range("gid", user.uid)
        assert uids is not None and gids is not None
        idmap = userns.IdMap(userns.SUBID_KIND, (uids,), (gids,))
        assert _ownership(out / "rootfs", idmap) == _ownership(arm64_rootfs.path, userns.IDENTITY)
        removed = user.run([user.python, "-c", "from pathlib import Path; from osbuilder import userns; "
                            f"userns.remove_tree(Path({str(out / 'rootfs')!r}))"])
        assert removed.returncode == 0, removed.stderr
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
