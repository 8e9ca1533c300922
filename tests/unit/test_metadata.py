"""osbuilder.yaml in Kata's exact layout, and the package list read with dpkg-query."""

from __future__ import annotations

import yaml

from osbuilder import metadata
from osbuilder.metadata import OsbuilderYaml, Package

KATA_LAYOUT = """\
---
osbuilder:
  url: "https://github.com/kata-containers/kata-containers/tools/osbuilder"
  version: "0.1.0+code.ab12ab12ab12"
rootfs-creation-time: "2023-11-14T22:13:20.000000000+0000Z"
description: "osbuilder rootfs"
file-format-version: "0.0.2"
architecture: "x86_64"
base-distro:
  name: "ubuntu"
  version: "noble"
  packages:
    default:
      - "chrony"
      - "init"
    extra:
      - "strace"
agent:
  url: "https://github.com/kata-containers/kata-containers"
  name: "kata-agent"
  version: "4.1.0"
  agent-is-init-daemon: "no"
"""


def _sample(extra: tuple[str, ...] = ("strace",)) -> OsbuilderYaml:
    return OsbuilderYaml(osbuilder_version="0.1.0+code.ab12ab12ab12", creation_time=metadata.creation_time(1700000000),
                         architecture="x86_64", distro="ubuntu", release="noble", packages=("init", "chrony", "init"),
                         extra_packages=extra, agent_name="kata-agent", agent_version="4.1.0", agent_is_init=False)


def test_layout_is_katas() -> None:
    assert _sample().render() == KATA_LAYOUT


def test_it_is_yaml_with_keys_in_katas_order() -> None:
    data = yaml.safe_load(_sample(extra=()).render())
    assert list(data) == ["osbuilder", "rootfs-creation-time", "description", "file-format-version", "architecture",
                          "base-distro", "agent"]
    assert list(data["agent"]) == ["url", "name", "version", "agent-is-init-daemon"]
    assert data["base-distro"]["packages"] == {"default": ["chrony", "init"], "extra": None}


def test_creation_time_format() -> None:
    assert metadata.creation_time(0) == "1970-01-01T00:00:00.000000000+0000Z"
    now = metadata.creation_time(None)
    assert now.endswith("+0000Z") and len(now.split(".")[1]) == len("000000000+0000Z")


def test_dpkg_query_output_keeps_installed_packages_only() -> None:
    output = "ii \tzlib1g\t1:1.3\tamd64\nrc \told\t1\tamd64\nii \tbase-files\t13\tamd64\n"
    assert metadata.parse_dpkg_query(output) == [Package("base-files", "13", "amd64"),
                                                 Package("zlib1g", "1:1.3", "amd64")]


def test_the_recorded_version_names_the_code_not_the_checkout() -> None:
    recorded = metadata.step_version("ab12" * 16)
    assert recorded == f"{metadata.__version__}+code.ab12ab12ab12"
    assert metadata.step_version("cd34" * 16) != recorded
