"""The kernel build pipeline on a fake kernel tree (tests/helpers/fakekernel.py): sources, patches,
configure-and-check, naming, the record, the cache, and the CLI. Real builds are in
tests/integration/test_kernel.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from osbuilder import debarchive
from osbuilder.arch import ARCHES
from osbuilder.cache import sha256_tree
from osbuilder.context import Context
from osbuilder.errors import EXIT_BAD_INPUT, EXIT_FAILED, BuildError, ConfigError, UsageError
from osbuilder.kernel import build as kbuild
from osbuilder.kernel.build import (
    KernelOptions,
    build_timestamp,
    cache_key_inputs,
    make_env,
)
from osbuilder.kernel.fragments import KconfigMismatchError
from osbuilder.kernel.source import touched_files
from osbuilder.paths import DEFAULT_DISTROS_DIR, DEFAULT_VERSIONS
from osbuilder.versions import load_versions
from tests.conftest import run_cli
from tests.helpers.fakearchive import make_key, publish
from tests.helpers.fakekernel import make_configs, make_tree, tarball
from tests.helpers.httpserver import FixtureServer
from tests.helpers.kernel import build_with, check_with, plan_with

NAME = "6.12.107-7"
EPOCH = 1_700_000_000


@dataclass
class Fake:
    tmp: Path
    tree: Path
    configs: Path
    log: Path
    context: Context
    out: Path

    def options(self, **changes: object) -> KernelOptions:
        values: dict[str, object] = {"source_path": self.tree, "configs_dir": self.configs, "output_dir": self.out}
        values.update(changes)
        return KernelOptions(**values)  # type: ignore[arg-type]

    def runs(self) -> list[dict[str, object]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def goals(self) -> list[str]:
        return [str(run["goal"]) for run in self.runs()]

    def logged(self, goal: str) -> dict[str, str]:
        for run in self.runs():
            if run["goal"] == goal:
                return run["env"]  # type: ignore[return-value]
        raise AssertionError(f"{goal} never ran")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fake:
    log = tmp_path / "make.log"
    monkeypatch.setenv("FAKEKERNEL_LOG", str(log))
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    monkeypatch.setenv("OSBUILDER_NO_PROGRESS", "1")
    context = Context(versions_path=DEFAULT_VERSIONS, distros_dir=DEFAULT_DISTROS_DIR, cache_dir=tmp_path / "cache")
    return Fake(tmp_path, make_tree(tmp_path / "linux"), make_configs(tmp_path / "configs"), log, context,
                tmp_path / "out")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- a build, its outputs and its record ---------------------------------------------------------


def test_build_writes_kata_names_links_and_a_record(fake: Fake) -> None:
    build = build_with(fake.context, fake.options())
    assert build.name == NAME and not build.cache_hit
    names = sorted(path.name for path in fake.out.iterdir())
    assert names == sorted([f"vmlinux-{NAME}", f"vmlinuz-{NAME}", f"config-{NAME}", f"System.map-{NAME}",
                            f"kernel-{NAME}.json", "vmlinux.container", "vmlinuz.container"])
    assert os.readlink(fake.out / "vmlinux.container") == f"vmlinux-{NAME}"
    assert os.readlink(fake.out / "vmlinuz.container") == f"vmlinuz-{NAME}"
    assert build.vmlinux.read_bytes()[:4] == b"\x7fELF"  # x86_64: the ELF, for PVH boot
    assert build.vmlinuz.read_bytes()[0x202:0x206] == b"HdrS"  # and the bzImage
    config = build.config.read_text()
    assert "CONFIG_VIRTIO_BLK=y" in config and "# CONFIG_MODULES is not set" in config

    record = json.loads(build.record.read_text())
    assert record == build.info
    assert record["name"] == NAME and record["kernel_version"] == "6.12.107" and record["config_version"] == "7"
    assert record["source"]["kind"] == "local-tree"
    assert record["source"]["tree_digest"] == sha256_tree(fake.tree)
    assert [(f["path"], f["sha256"]) for f in record["config"]["fragments"]] == [
        (label, sha256(fake.configs / label)) for label in
        ("common/base.conf", "common/initrd.conf", "common/virtio.conf", "common/vsock.conf", "x86_64/base.conf",
         "measured/verity.conf")]
    assert record["config"]["sha256"] == sha256(build.config) == build.config_sha256
    assert record["outputs"]["vmlinuz"]["sha256"] == sha256(build.vmlinuz)
    assert record["outputs"]["vmlinux"]["built_as"] == "vmlinux"
    assert record["outputs"]["vmlinuz"]["built_as"] == "arch/x86/boot/bzImage"
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    assert record["toolchain"]["gcc"] == gcc
    assert record["cache_key"] == build.cache_key
    assert record["variant"] == {"arch": "x86_64", "confidential": False, "measured": True, "debug": False,
                                 "build_type": None, "suffix": ""}
    assert record["config_changed_without_version_bump"] is None

    # the kernel's make got a fixed, clean environment
    assert fake.goals()[0] == "allnoconfig" and sorted(fake.goals()[1:]) == ["bzImage", "vmlinux"]
    env = fake.logged("vmlinux")
    assert env["ARCH"] == "x86_64" and env["CROSS_COMPILE"] == ""
    assert env["KBUILD_BUILD_USER"] == "osbuilder" and env["KBUILD_BUILD_HOST"] == "osbuilder"
    assert env["SOURCE_DATE_EPOCH"] == str(EPOCH)  # the tree's Makefile date
    assert env["KBUILD_BUILD_TIMESTAMP"] == "Tue Nov 14 22:13:20 UTC 2023"
    assert env["RUSTC"] == "false" and env["CCACHE_DISABLE"] == "1"
    assert b"(osbuilder@osbuilder)" in build.vmlinux.read_bytes()
    # the O= directory is not kept, and the entry holds only the outputs
    assert list((fake.context.cache.root / "kernel-work").iterdir()) == []
    assert build.cache_entry is not None
    assert sorted(p.name for p in build.cache_entry.iterdir()) == sorted([*names, ".osbuilder-cache.json"])


def test_the_outer_makes_flags_do_not_reach_the_kernel_make(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    # `make kernel ARCH=aarch64` exports ARCH through MAKEFLAGS to everything below it
    monkeypatch.setenv("MAKEFLAGS", " -- ARCH=aarch64")
    monkeypatch.setenv("MAKELEVEL", "1")
    build_with(fake.context, fake.options())
    assert fake.logged("vmlinux")["ARCH"] == "x86_64"
    assert "aarch64" not in fake.logged("vmlinux")["MAKEFLAGS"]


def test_second_build_is_a_cache_hit_that_runs_nothing(fake: Fake) -> None:
    first = build_with(fake.context, fake.options())
    goals = fake.goals()
    fake.log.unlink()
    second = build_with(fake.context, fake.options(output_dir=fake.tmp / "again", jobs=1))
    assert second.cache_hit and second.cache_key == first.cache_key
    assert not fake.log.exists()
    assert len(goals) == 3
    assert sha256(second.vmlinux) == sha256(first.vmlinux)
    assert second.cache_entry is not None
    # outputs are copies, so editing one cannot corrupt the cache
    assert second.vmlinux.stat().st_ino != (second.cache_entry / f"vmlinux-{NAME}").stat().st_ino


def test_cache_key_covers_every_input_and_nothing_else(fake: Fake) -> None:
    base = plan_with(fake.context, fake.options()).cache_key

    def key(**changes: object) -> str:
        return plan_with(fake.context, fake.options(**changes)).cache_key

    assert key(jobs=1, ccache=True, output_dir=fake.tmp / "elsewhere", keep_build_dir=True) == base
    assert key(debug=True) != base
    assert key(measured=False) != base
    assert key(arch="aarch64") != base
    one = fake.tmp / "a" / "extra.conf"
    two = fake.tmp / "b" / "extra.conf"
    for path in (one, two):
        path.parent.mkdir()
        path.write_text("CONFIG_SOUND=y\n")
    assert key(extra_fragments=(one,)) == key(extra_fragments=(two,)) != base  # where it lives does not matter
    (fake.configs / "common" / "base.conf").write_text("CONFIG_SMP=y\nCONFIG_PCI=y\n")
    changed_fragment = key()
    assert changed_fragment != base
    (fake.configs / "whitelist.conf").write_text("FOO\n")
    changed_whitelist = key()
    assert changed_whitelist != changed_fragment
    (fake.configs / "config_version").write_text("8\n")
    assert key() != changed_whitelist
    (fake.tree / "init" / "main.c").write_text("changed\n")
    assert key() != changed_whitelist  # the tree digest
    plan = plan_with(fake.context, fake.options())
    inputs = dict(plan.key_inputs)
    arguments = dict(kernel_version=plan.kernel_version, arch=plan.arch, variant=plan.variant,
                     config_version=plan.config_version, source=plan.source, patches=plan.patches,
                     selection=plan.selection, whitelist=plan.whitelist, full_config_sha256=None,
                     configs_dir=plan.configs_dir, toolchain=plan.toolchain, epoch=plan.epoch, rust=False)
    assert cache_key_inputs(**{**arguments, "toolchain": {"gcc": "gcc 99"}}) != inputs  # type: ignore[arg-type]
    # "code": the digest of the modules that build a kernel (osbuilder.codegraph), not a hand-bumped format.
    assert set(inputs) == {"format", "code", "kernel_version", "arch", "variant", "config_version", "source",
                           "patches", "config", "toolchain", "targets", "build_env"}


def test_source_date_epoch_overrides_the_source_date(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    base = plan_with(fake.context, fake.options()).cache_key
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    assert plan_with(fake.context, fake.options()).cache_key != base
    build_with(fake.context, fake.options())
    assert fake.logged("vmlinux")["KBUILD_BUILD_TIMESTAMP"] == "Fri Jan  2 00:00:00 UTC 1970"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
        plan_with(fake.context, fake.options())


def test_make_environment() -> None:
    env = make_env(0, None)
    assert env["MAKEFLAGS"] == "" and env["MAKELEVEL"] == "0" and env["CCACHE_DISABLE"] == "1"
    assert build_timestamp(0) == "Thu Jan  1 00:00:00 UTC 1970"
    assert make_env(0, Path("/c"))["CCACHE_DIR"] == "/c" and "CCACHE_DISABLE" not in make_env(0, Path("/c"))
    assert ARCHES["x86_64"].kernel == "x86_64"  # ARCH=x86 would configure an i386 kernel


# --- failures ------------------------------------------------------------------------------------


def extra(fake: Fake, text: str, name: str = "extra.conf") -> Path:
    path = fake.tmp / name
    path.write_text(text)
    return path


def test_misspelt_and_unsatisfiable_options_fail_with_file_line(fake: Fake) -> None:
    fragment = extra(fake, "# test\nCONFIG_VIRTIO_BLKK=y\nCONFIG_SND_HDA_INTEL=y\n")
    with pytest.raises(KconfigMismatchError) as caught:
        build_with(fake.context, fake.options(extra_fragments=(fragment,)))
    error = caught.value
    assert error.exit_code == EXIT_FAILED
    text = error.message()
    assert f"{fragment}:2: CONFIG_VIRTIO_BLKK: requested y, got absent from .config (no such option" in text
    assert f"{fragment}:3: CONFIG_SND_HDA_INTEL: requested y, got absent from .config (defined at Kconfig:" in text
    assert "depends on SOUND_CARDS_THAT_NOBODY_ENABLES" in text
    assert fake.goals() == ["allnoconfig"]  # nothing compiled
    assert not (fake.context.cache.root / "kernel").exists() or not list((fake.context.cache.root / "kernel").iterdir())
    assert not fake.out.exists() or list(fake.out.iterdir()) == []


def test_out_of_range_value_reports_both_values(fake: Fake) -> None:
    configs = make_configs(fake.tmp / "configs2", {"common/a.conf": "CONFIG_NR_CPUS=100000\n"})
    with pytest.raises(KconfigMismatchError, match=r"a.conf:1: CONFIG_NR_CPUS: requested 100000, got 64 "
                                                   r"\(defined at Kconfig:\d+; range 2 512\)"):
        check_with(fake.context, fake.options(configs_dir=configs))


def test_disagreeing_fragments_are_bad_input_found_before_make(fake: Fake) -> None:
    fragment = extra(fake, "\nCONFIG_NR_CPUS=8\n")
    with pytest.raises(ConfigError) as caught:
        build_with(fake.context, fake.options(extra_fragments=(fragment,)))
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert f"CONFIG_NR_CPUS is set to different values: 256 at x86_64/base.conf:2 and 8 at {fragment}:2" in \
        caught.value.message()
    assert fake.goals() == []


def test_whitelisted_option_passes_and_is_recorded(fake: Fake) -> None:
    (fake.configs / "whitelist.conf").write_text("# renamed upstream\nCONFIG_VIRTIO_BLKK\n")
    fragment = extra(fake, "CONFIG_VIRTIO_BLKK=y\n")
    build = build_with(fake.context, fake.options(extra_fragments=(fragment,)))
    used = build.info["config"]["whitelist"]["used"]
    assert [(u["symbol"], u["actual"]) for u in used] == [("CONFIG_VIRTIO_BLKK", "absent from .config")]
    assert any("CONFIG_VIRTIO_BLKK" in warning for warning in build.warnings)


def test_a_failing_compile_leaves_no_cache_entry_and_no_outputs(fake: Fake) -> None:
    fragment = extra(fake, "CONFIG_FAIL_BUILD=y\n")
    with pytest.raises(BuildError) as caught:
        build_with(fake.context, fake.options(extra_fragments=(fragment,)))
    assert caught.value.exit_code == EXIT_FAILED
    assert "CONFIG_FAIL_BUILD asked for a failure" in caught.value.message()
    cache = fake.context.cache.root
    assert list((cache / "kernel").iterdir()) == [] if (cache / "kernel").exists() else True
    assert list((cache / "tmp").iterdir()) == []
    assert list((cache / "kernel-work").iterdir()) == []
    assert not fake.out.exists() or list(fake.out.iterdir()) == []


def test_confidential_arm64_is_a_clear_error(fake: Fake) -> None:
    with pytest.raises(UsageError, match="no confidential guest support for arm64"):
        build_with(fake.context, fake.options(arch="aarch64", confidential=True))
    assert not fake.out.exists()  # bad input: nothing was created
    with pytest.raises(UsageError, match="always has a measured rootfs"):
        build_with(fake.context, fake.options(confidential=True, measured=False))


def test_an_unpinned_version_needs_a_local_source(fake: Fake) -> None:
    with pytest.raises(UsageError, match="6.13.1 is not pinned"):
        plan_with(fake.context, KernelOptions(version="v6.13.1", configs_dir=fake.configs))
    with pytest.raises(UsageError, match="the tree is Linux 6.12.107, not 6.13.1"):
        plan_with(fake.context, fake.options(version="6.13.1"))
    assert plan_with(fake.context, fake.options(version="v6.12.107")).kernel_version == "6.12.107"


def test_a_configured_tree_is_refused(fake: Fake) -> None:
    (fake.tree / ".config").write_text("CONFIG_X=y\n")
    with pytest.raises(UsageError, match="configured in place"):
        plan_with(fake.context, fake.options())


# --- variants ------------------------------------------------------------------------------------


def test_arm64_cross_build_names_image_and_image_gz(fake: Fake) -> None:
    build = build_with(fake.context, fake.options(arch="aarch64", debug=True))
    assert build.name == f"{NAME}-debug" and build.arch == "aarch64"
    assert build.vmlinux.name == f"vmlinux-{NAME}-debug"
    assert build.vmlinux.read_bytes()[0x38:0x3C] == b"ARM\x64"  # Kata ships arch/arm64/boot/Image as vmlinux
    assert build.vmlinuz.read_bytes()[:2] == b"\x1f\x8b"  # and Image.gz as vmlinuz
    assert os.readlink(fake.out / "vmlinux-debug.container") == f"vmlinux-{NAME}-debug"
    env = fake.logged("Image")
    assert env["ARCH"] == "arm64" and env["CROSS_COMPILE"] == "aarch64-linux-gnu-"
    assert "Image.gz" in fake.goals() and "bzImage" not in fake.goals()
    assert build.info["toolchain"]["cross_gcc"].startswith("aarch64-linux-gnu-gcc")
    assert "CONFIG_NR_CPUS=128" in build.config.read_text()


def test_ccache_compiles_through_ccache_in_the_cache_dir(fake: Fake) -> None:
    build_with(fake.context, fake.options(ccache=True))
    env = fake.logged("vmlinux")
    assert env["CC"].endswith("ccache gcc")
    assert env["CCACHE_DIR"] == str(fake.context.cache.root / "ccache") and env["CCACHE_DISABLE"] == ""


def test_no_cache_rebuilds_and_stores_nothing(fake: Fake) -> None:
    build_with(fake.context, fake.options())
    fake.log.unlink()
    build = build_with(fake.context, fake.options(use_cache=False, output_dir=fake.tmp / "fresh"))
    assert not build.cache_hit and build.cache_entry is None and "vmlinux" in fake.goals()
    assert build.vmlinux.is_file()
    assert len(list((fake.context.cache.root / "kernel").iterdir())) == 1
    with pytest.raises(UsageError, match="needs an output directory"):
        build_with(fake.context, fake.options(use_cache=False, output_dir=None))


def test_full_config_uses_olddefconfig_without_the_fragment_check(fake: Fake) -> None:
    config = extra(fake, "CONFIG_PCI=y\nCONFIG_VIRTIO_PCI=y\nCONFIG_NOT_A_SYMBOL=y\n", "my.config")
    build = build_with(fake.context, fake.options(full_config=config))
    assert fake.goals()[0] == "olddefconfig"
    assert build.info["config"]["mode"] == "file"
    assert "CONFIG_VIRTIO_PCI=y" in build.config.read_text()
    with pytest.raises(UsageError, match="fragments do not apply"):
        plan_with(fake.context, fake.options(full_config=config, extra_fragments=(config,)))


def test_keep_build_dir_keeps_the_o_directory(fake: Fake) -> None:
    build_with(fake.context, fake.options(keep_build_dir=True))
    kept = list((fake.context.cache.root / "kernel-work").iterdir())
    assert len(kept) == 1 and (kept[0] / "vmlinux").is_file() and (kept[0] / ".osbuilder-reusable").is_file()


def test_changed_config_without_a_version_bump_is_reported(fake: Fake) -> None:
    build_with(fake.context, fake.options())
    (fake.configs / "common" / "virtio.conf").write_text("CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_BLK=y\n")
    second = build_with(fake.context, fake.options())
    drift = second.info["config_changed_without_version_bump"]
    assert drift["changed"] == [{"symbol": "CONFIG_VIRTIO_CONSOLE", "before": "y", "now": "is not set"}]
    assert any("config_version is still 7" in warning and "CONFIG_VIRTIO_CONSOLE" in warning
               for warning in second.warnings)
    (fake.configs / "config_version").write_text("8\n")
    third = build_with(fake.context, fake.options())
    assert third.name == "6.12.107-8" and third.warnings == ()


# --- sources -------------------------------------------------------------------------------------


def pinned_versions(tmp_path: Path, *, tarball_url: str | None = None, tarball_sha: str | None = None,
                    deb_sha: str | None = None) -> Path:
    original = load_versions(DEFAULT_VERSIONS)
    text = DEFAULT_VERSIONS.read_text()
    if tarball_url and tarball_sha:
        download = original.kernel_tarball_source()
        text = text.replace(download.url, tarball_url).replace(download.sha256, tarball_sha)
    if deb_sha:
        text = text.replace(original.kernel_debian_source().sha256_for("x86_64"), deb_sha)
    path = tmp_path / "versions.yaml"
    path.write_text(text)
    return path


def test_tarball_source_from_a_server_is_verified_unpacked_once_and_recorded(
        fake: Fake, http_server: FixtureServer) -> None:
    data = tarball(fake.tree, "linux-6.12.107")
    digest = hashlib.sha256(data).hexdigest()
    url = http_server.add("pub/linux-6.12.107.tar.xz", data)
    context = Context(versions_path=pinned_versions(fake.tmp, tarball_url=url, tarball_sha=digest),
                      distros_dir=DEFAULT_DISTROS_DIR, cache_dir=fake.tmp / "cache")
    options = fake.options(source_path=None, source_kind="tarball")
    build = build_with(context, options)
    assert build.info["source"] == {"kind": "tarball", "sha256": digest, "version": "6.12.107", "url": url,
                                    "tree_version": "6.12.107"}
    build_with(context, KernelOptions(source_kind="tarball", configs_dir=fake.configs, debug=True,
                                        output_dir=fake.out))
    assert http_server.files["pub/linux-6.12.107.tar.xz"].served_full == 1
    unpacked = list((context.cache.root / "kernel-source").iterdir())
    assert len(unpacked) == 1 and (unpacked[0] / "tree" / "Makefile").is_file()
    # a wrong pin keeps nothing
    (fake.tmp / "bad").mkdir()
    bad = Context(versions_path=pinned_versions(fake.tmp / "bad", tarball_url=url, tarball_sha="0" * 64),
                  distros_dir=DEFAULT_DISTROS_DIR, cache_dir=fake.tmp / "cache2")
    with pytest.raises(BuildError, match="sha256 mismatch"):
        build_with(bad, options)


def test_local_tarball_source(fake: Fake) -> None:
    path = fake.tmp / "linux.tar.xz"
    path.write_bytes(tarball(fake.tree, "linux-6.12.107"))
    build = build_with(fake.context, fake.options(source_path=path))
    assert build.info["source"]["kind"] == "local-tarball"
    assert build.info["source"]["sha256"] == sha256(path)
    assert build.name == NAME


def test_debian_source_through_signed_metadata(fake: Fake, http_server: FixtureServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    inner = tarball(fake.tree, "linux-source-6.12")
    keyring = make_key(fake.tmp / "gnupg", "archive")
    archive = publish(http_server, fake.tmp, suite="trixie", package="linux-source-6.12", version="6.12.107-1",
                      files={"usr/src/linux-source-6.12.tar.xz": inner, "usr/share/doc/x/copyright": b"GPL\n"},
                      signing_home=fake.tmp / "gnupg")
    monkeypatch.setattr(debarchive, "DEBIAN_KEYRING", keyring)
    context = Context(versions_path=pinned_versions(fake.tmp, deb_sha=archive.deb_sha256),
                      distros_dir=DEFAULT_DISTROS_DIR, cache_dir=fake.tmp / "cache")
    build = build_with(context, KernelOptions(configs_dir=fake.configs, output_dir=fake.out,
                                                mirror=archive.mirror))
    source = build.info["source"]
    assert source["kind"] == "debian" and source["sha256"] == archive.deb_sha256
    assert source["package"] == "linux-source-6.12" and source["package_version"] == "6.12.107-1"
    entry = next((context.cache.root / "kernel-source").iterdir())
    assert sorted(p.name for p in entry.iterdir()) == [".osbuilder-cache.json", "tree"]  # nothing else kept


# --- patches -------------------------------------------------------------------------------------

PATCH = """\
From: osbuilder test
--- a/init/main.c\t2024-01-01 00:00:00
+++ b/init/main.c\t2024-01-01 00:00:00
@@ -1,4 +1,4 @@
 int start_kernel(void)
 {
-\treturn 0;
+\treturn 1;
 }
"""


def test_patches_apply_to_a_copy_and_never_touch_the_pristine_tree(fake: Fake) -> None:
    before = sha256_tree(fake.tree)
    plain = plan_with(fake.context, fake.options()).cache_key
    patch_dir = fake.configs / "patches" / "6.12.x"
    patch_dir.mkdir(parents=True)
    (patch_dir / "0001-return-one.patch").write_text(PATCH)
    build = build_with(fake.context, fake.options())
    assert build.cache_key != plain
    assert build.info["patches"] == [{"path": "patches/6.12.x/0001-return-one.patch",
                                      "sha256": sha256(patch_dir / "0001-return-one.patch")}]
    assert sha256_tree(fake.tree) == before
    patched = next((fake.context.cache.root / "kernel-tree").iterdir()) / "tree"
    assert "return 1;" in (patched / "init" / "main.c").read_text()
    assert "return 0;" in (fake.tree / "init" / "main.c").read_text()
    # unpatched files are shared with the pristine tree, patched ones are not
    assert (patched / "Kconfig").stat().st_ino == (fake.tree / "Kconfig").stat().st_ino
    assert (patched / "init" / "main.c").stat().st_ino != (fake.tree / "init" / "main.c").stat().st_ino


def test_a_patch_that_does_not_apply_names_itself(fake: Fake) -> None:
    patch_dir = fake.configs / "patches" / "6.12.x"
    patch_dir.mkdir(parents=True)
    (patch_dir / "0003-stale.patch").write_text(PATCH.replace("return 0", "return 5"))
    with pytest.raises(BuildError, match="0003-stale.patch does not apply to Linux 6.12.107") as caught:
        build_with(fake.context, fake.options())
    assert caught.value.exit_code == EXIT_FAILED
    assert not (fake.context.cache.root / "kernel-tree").exists() or \
        list((fake.context.cache.root / "kernel-tree").iterdir()) == []
    assert "return 0;" in (fake.tree / "init" / "main.c").read_text()


def test_touched_files() -> None:
    assert touched_files(PATCH) == ["init/main.c"]
    git = "--- /dev/null\n+++ b/new/file.c\n--- a/old.c\n+++ b/old.c\n"
    assert touched_files(git) == ["new/file.c", "old.c"]


# --- progress -------------------------------------------------------------------------------------


def test_progress_counts_kbuild_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OSBUILDER_NO_PROGRESS", "1")
    counter = kbuild._Progress(10, "kernel", echo=False)
    for line in ("  CC      init/main.o", "  LD [M]  x.ko", "make[1]: Entering directory", "  AR      lib.a",
                 "In file included from x.c:1:", "  HOSTCC  scripts/basic/fixdep"):
        counter(line)
    counter.close()
    assert counter.count == 4


# --- the command line ----------------------------------------------------------------------------


def test_cli_build_json_and_cache_hit(fake: Fake) -> None:
    args = ["--cache-dir", fake.tmp / "cache", "build-kernel", "--source", fake.tree, "--configs-dir", fake.configs,
            "-o", fake.out, "--json"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["cache_hit"] is False and data["name"] == NAME
    assert data["outputs"]["vmlinux"]["path"] == str(fake.out / f"vmlinux-{NAME}")
    assert data["outputs"]["vmlinuz"]["size"] == (fake.out / f"vmlinuz-{NAME}").stat().st_size
    assert data["config_sha256"] == sha256(fake.out / f"config-{NAME}")
    assert isinstance(data["duration"], float)
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["cache_hit"] is True


def test_cli_exit_codes(fake: Fake) -> None:
    common = ["--cache-dir", fake.tmp / "cache", "build-kernel", "--source", fake.tree, "--configs-dir", fake.configs,
              "-o", fake.out]
    conflict = run_cli(*common, "--extra-fragment", extra(fake, "CONFIG_NR_CPUS=2\n"))
    assert conflict.returncode == 2 and "x86_64/base.conf:2" in conflict.stderr
    mismatch = run_cli(*common, "--extra-fragment", extra(fake, "CONFIG_VIRTIO_BLKK=y\n", "typo.conf"))
    assert mismatch.returncode == 1 and "typo.conf:1: CONFIG_VIRTIO_BLKK: requested y" in mismatch.stderr
    confidential = run_cli(*common, "--arch", "aarch64", "--confidential")
    assert confidential.returncode == 2 and "no confidential guest support for arm64" in confidential.stderr
    both = run_cli(*common, "--source-kind", "debian")
    assert both.returncode == 2


def test_cli_config_only(fake: Fake) -> None:
    result = run_cli("--cache-dir", fake.tmp / "cache", "build-kernel", "--config-only", "--source", fake.tree,
                     "--configs-dir", fake.configs, "-o", fake.out, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["requested"] == 13 and data["config"] == str(fake.out / f"config-{NAME}")
    assert [p.name for p in fake.out.iterdir()] == [f"config-{NAME}"]
    assert "vmlinux" not in fake.goals()
