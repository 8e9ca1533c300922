"""Release evidence on synthetic inputs: package facts from a tree, CycloneDX SBOMs checked by the
library's validator, the provenance statement and its DSSE signature, reference value comparison."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from osbuilder.errors import BuildError, ConfigError, UsageError
from osbuilder.evidence import provenance, refvalues, sbom
from osbuilder.evidence.assetfacts import AssetFacts
from osbuilder.modes import InitMode
from osbuilder.rootfs import packagefacts
from osbuilder.rootfs.tree import RootfsTree

DEP5 = """Format: https://www.debian.org/doc/packaging-manifests/copyright-format/1.0/
Upstream-Name: demo
License: GPL-2+

Files: *
Copyright: someone
License: GPL-2+

Files: lib/*
Copyright: someone else
License: Expat

License: Expat
 Permission is hereby granted...
"""
STATUS = """Package: demo
Status: install ok installed
Architecture: amd64
Source: demo-src (1.0-1)
Version: 1:1.0-1

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 2.0

Package: plain
Status: install ok installed
Architecture: all
Version: 3.0
"""


def _lists(tree: RootfsTree, packages_text: bytes, listed_digest: str | None = None) -> None:
    digest = listed_digest or hashlib.sha256(packages_text).hexdigest()
    release = (f"Origin: Demo\nSuite: demo-updates\nCodename: demo\nSHA256:\n {digest} {len(packages_text)} "
               "main/binary-amd64/Packages\n")
    signed = ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n" + release +
              "\n-----BEGIN PGP SIGNATURE-----\nxyz\n-----END PGP SIGNATURE-----\n")
    tree.put_file("var/lib/apt/lists/host_ubuntu_dists_demo-updates_InRelease", signed.encode())
    tree.put_file("var/lib/apt/lists/host_ubuntu_dists_demo-updates_main_binary-amd64_Packages.gz",
                  gzip.compress(packages_text, mtime=0))


def _tree(tmp_path: Path) -> RootfsTree:
    tree = RootfsTree(mtime=1700000000)
    tree.put_file(packagefacts.DPKG_STATUS, STATUS.encode())
    tree.put_file("usr/share/doc/demo/copyright", DEP5.encode())
    tree.put_file("usr/share/doc/plain/copyright", b"This is free software, written long ago.\n")
    return tree


PACKAGES = (b"Package: demo\nVersion: 1:1.0-1\nArchitecture: amd64\nFilename: pool/main/d/demo/demo_1.0-1_amd64.deb\n"
            b"SHA256: " + b"a" * 64 + b"\n\nPackage: plain\nVersion: 3.0\nArchitecture: all\nSHA256: " + b"b" * 64 + b"\n")


def test_license_names_come_from_machine_readable_files_only() -> None:
    assert packagefacts.license_names(DEP5) == ["Expat", "GPL-2+"]
    assert packagefacts.license_names("This is free software.\n") is None


def test_facts_record_licenses_sources_and_origins_from_the_signed_lists(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    _lists(tree, PACKAGES)
    facts = packagefacts.collect(tree, "ubuntu")
    assert facts is not None
    by_name = {entry["name"]: entry for entry in facts["packages"]}
    assert set(by_name) == {"demo", "plain"}  # not the package that is only configured
    demo = by_name["demo"]
    assert (demo["source"], demo["source_version"]) == ("demo-src", "1.0-1")
    assert demo["licenses"] == ["Expat", "GPL-2+"]
    assert demo["origin"] == {"archive": "ubuntu", "suite": "demo-updates", "index": "main/binary-amd64/Packages",
                              "sha256": "a" * 64, "filename": "pool/main/d/demo/demo_1.0-1_amd64.deb"}
    assert by_name["plain"]["license_from"] == "copyright file is not machine-readable"
    index = facts["indexes"][0]
    assert index["suite"] == "demo-updates" and index["origin"] == "Demo"
    assert "host" not in json.dumps(facts)  # the mirror is never recorded


def test_a_package_list_that_does_not_match_its_inrelease_gives_no_origin(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    _lists(tree, PACKAGES, listed_digest="0" * 64)
    facts = packagefacts.collect(tree, "ubuntu")
    assert facts is not None
    assert all("origin" not in entry for entry in facts["packages"])


def _facts(tmp_path: Path) -> AssetFacts:
    tree = _tree(tmp_path)
    _lists(tree, PACKAGES)
    packages = packagefacts.collect(tree, "ubuntu")
    assert packages is not None
    manifest = {"init": "systemd", "architecture": "x86_64", "cache_key": "k",
                "agent": {"name": "kata-agent", "version": "4.1.0", "sha256": "c" * 64, "source_sha256": "d" * 64}}
    return AssetFacts(STATUS, packages, manifest, {"base-distro": {"name": "ubuntu", "version": "noble"}})


def test_asset_sbom_validates_and_lists_every_installed_package(tmp_path: Path) -> None:
    text = sbom.render(sbom.asset_bom(_facts(tmp_path), file_name="x.img", sha256="e" * 64, kind="image",
                                      epoch=1700000000))
    assert sbom.validate(text) == []
    data = json.loads(text)
    assert data["specVersion"] == "1.6"
    assert data["metadata"]["timestamp"].startswith("2023-11-14T22:13:20")
    components = {component["name"]: component for component in data["components"]}
    assert set(components) == {"demo", "plain", "kata-agent"}
    demo = components["demo"]
    assert demo["purl"] == "pkg:deb/ubuntu/demo@1:1.0-1?arch=amd64&distro=ubuntu-noble"
    assert demo["hashes"] == [{"alg": "SHA-256", "content": "a" * 64}]
    assert sorted(entry["license"]["id"] for entry in demo["licenses"]) == ["GPL-2.0-or-later", "MIT"]
    properties = {item["name"]: item["value"] for item in demo["properties"]}
    assert properties["osbuilder:suite"] == "demo-updates" and properties["osbuilder:source-package"] == "demo-src"
    assert components["kata-agent"]["hashes"][0]["content"] == "c" * 64


def test_asset_sbom_is_reproducible_and_the_validator_can_fail(tmp_path: Path) -> None:
    facts = _facts(tmp_path)
    first = sbom.render(sbom.asset_bom(facts, file_name="x.img", sha256="e" * 64, kind="image", epoch=1))
    assert first == sbom.render(sbom.asset_bom(facts, file_name="x.img", sha256="e" * 64, kind="image", epoch=1))
    broken = json.loads(first)
    broken["components"][0]["type"] = "not-a-type"
    assert sbom.validate(json.dumps(broken))


def test_a_delivered_sbom_names_the_output_as_if_built_under_its_name(tmp_path: Path) -> None:
    # A cache entry's SBOM names the entry's file (the same bytes whatever the builder's -o); the
    # copy next to another output names that output, exactly as an SBOM built there would.
    facts = _facts(tmp_path)
    delivered = tmp_path / "other.img.cdx.json"
    delivered.write_text(sbom.render(sbom.asset_bom(facts, file_name="kata-containers.img", sha256="e" * 64,
                                                    kind="image", epoch=1)))
    sbom.name_delivered_asset(delivered, "other.img")
    expected = sbom.render(sbom.asset_bom(facts, file_name="other.img", sha256="e" * 64, kind="image", epoch=1))
    assert delivered.read_text() == expected  # byte for byte
    assert sbom.validate(delivered.read_text()) == []
    assert "kata-containers.img" not in delivered.read_text()
    unchanged = delivered.read_bytes()
    sbom.name_delivered_asset(delivered, "other.img")
    assert delivered.read_bytes() == unchanged


def test_bundle_sbom_links_each_asset_sbom_by_serial_and_digest(tmp_path: Path) -> None:
    asset_text = sbom.render(sbom.asset_bom(_facts(tmp_path), file_name="a.img", sha256="e" * 64, kind="image",
                                            epoch=1))
    link = sbom.serial_link(asset_text)
    asset = sbom.BundledAsset("share/kata-containers/a.img", "image", "e" * 64, "sbom/a.img.cdx.json",
                              hashlib.sha256(asset_text.encode()).hexdigest(), link, {"sha256": "c" * 64})
    kernel = {"name": "6.12.107-1", "kernel_version": "6.12.107", "config": {"sha256": "f" * 64},
              "source": {"kind": "debian", "package": "linux-source-6.12", "version": "6.12.107-1", "sha256": "1" * 64}}
    text = sbom.render(sbom.bundle_bom(name="kata-static-4.1.0-x86_64", version="4.1.0", arch="x86_64", epoch=1,
                                       kernel=kernel, kernel_files=[sbom.BundledFile("share/vmlinux", "2" * 64)],
                                       assets=[asset], runtime=[], runtime_version="4.1.0"))
    assert sbom.validate(text) == []
    components = {component["bom-ref"]: component for component in json.loads(text)["components"]}
    reference = components["asset:share/kata-containers/a.img"]["externalReferences"][0]
    assert reference["type"] == "bom" and reference["url"] == link and link.startswith("urn:cdx:")
    assert reference["hashes"][0]["content"] == asset.sbom_sha256
    linux = components["kernel:6.12.107-1"]
    properties = {item["name"]: item["value"] for item in linux["properties"]}
    assert properties["osbuilder:config-sha256"] == "f" * 64 and properties["osbuilder:source-sha256"] == "1" * 64


def _key(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private, public = tmp_path / f"{name}.pem", tmp_path / f"{name}.pub"
    private.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return private, public


def _statement() -> dict[str, object]:
    manifest = {"format": "osbuilder-bundle/1", "inputs": {
        "kernel": {"source": {"kind": "debian", "package": "linux-source-6.12", "version": "6.12.107-1",
                              "sha256": "1" * 64}, "config": {"fragments": [{"path": "common/a.conf", "sha256": "2" * 64}]}},
        "guests": {}, "runtime": {"version": "4.1.0", "sha256": "3" * 64, "source": "/tmp/x"},
        "versions_yaml_sha256": "4" * 64}}
    packages = {"f": {"archive": "ubuntu", "indexes": [{"suite": "noble", "codename": "noble", "origin": "Ubuntu",
                                                        "inrelease_sha256": "5" * 64, "packages_indexes": {}}]}}
    return provenance.statement(tarball=Path("kata.tar.zst"), tarball_sha256="6" * 64, sums={"VERSION": "7" * 64},
                                sums_sha256="8" * 64, manifest=manifest, asset_packages=packages,
                                tools={"gcc": "gcc 12"}, parameters={"source_date_epoch": 1})


def test_provenance_statement_has_subjects_and_pinned_dependencies() -> None:
    data = _statement()
    assert data["_type"] == provenance.STATEMENT_TYPE and data["predicateType"] == provenance.PREDICATE_TYPE
    assert [subject["name"] for subject in data["subject"]] == ["kata.tar.zst", "opt/kata/SHA256SUMS",
                                                                 "opt/kata/VERSION"]
    dependencies = {entry["name"]: entry for entry in data["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert dependencies["kernel-source"]["uri"] == "pkg:deb/debian/linux-source-6.12@6.12.107-1"
    assert dependencies["ubuntu noble InRelease"]["digest"] == {"sha256": "5" * 64}
    assert dependencies["kernel-configs/common/a.conf"]["digest"] == {"sha256": "2" * 64}
    assert dependencies["gcc"]["annotations"] == {"version": "gcc 12"}


def test_signed_provenance_verifies_only_with_its_key_and_intact(tmp_path: Path) -> None:
    private, public = _key(tmp_path, "release")
    _, other = _key(tmp_path, "other")
    signed = tmp_path / "b.intoto.jsonl"
    signed.write_bytes(provenance.sign(provenance.render(_statement()), private))
    assert provenance.open_statement(signed, public)["subject"][0]["name"] == "kata.tar.zst"
    with pytest.raises(BuildError, match="does not verify"):
        provenance.open_statement(signed, other)
    envelope = json.loads(signed.read_text())
    payload = json.loads(provenance.payload_of(signed.read_bytes()))
    payload["subject"][0]["digest"]["sha256"] = "0" * 64
    import base64

    envelope["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    signed.write_text(json.dumps(envelope) + "\n")
    with pytest.raises(BuildError, match="does not verify"):
        provenance.open_statement(signed, public)
    with pytest.raises(UsageError, match="its key is needed"):
        provenance.open_statement(signed, None)


def test_a_bad_sign_key_is_bad_input(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("not a key")
    with pytest.raises(UsageError, match="PEM private key"):
        provenance.check_sign_key(key)


def test_compare_names_verity_first_then_digests_then_command_lines() -> None:
    reference = {"format": "x", "measured": {"m.img": {"root_hash": "a", "hash_partition_matches": True,
                                                       "kernel_verity_params": "p"}},
                 "sha256": {"vmlinux": "1", "m.img": "2"}, "configurations": {"c.toml": {"kernel_cmdline": "x"}},
                 "agent_version": {"m.img": "4.1.0"}}
    derived = json.loads(json.dumps(reference))
    assert refvalues.compare(reference, derived) == []
    derived["sha256"]["vmlinux"] = "9"
    derived["configurations"]["c.toml"]["kernel_cmdline"] = "y"
    found = refvalues.compare(reference, derived)
    assert [problem.file for problem in found] == ["vmlinux", "share/defaults/kata-containers/c.toml"]
    derived["measured"]["m.img"]["hash_partition_matches"] = False
    assert refvalues.compare(reference, derived)[0].message().startswith(
        "m.img: the hash partition does not hold the hash tree of the data partition")
    derived["measured"]["m.img"]["root_hash"] = "b"
    first = refvalues.compare(reference, derived)[0]
    assert (first.file, first.what) == ("m.img", "root_hash")


def test_budget_sizes_and_limits_come_from_versions_yaml(tmp_path: Path) -> None:
    from osbuilder.evidence import budgets
    from osbuilder.paths import DEFAULT_VERSIONS
    from osbuilder.versions import load_versions

    assert budgets.parse_size("160 MiB") == 160 << 20 and budgets.parse_size("1234") == 1234
    assert budgets.parse_size("1.5 KiB") == 1536
    versions = load_versions(DEFAULT_VERSIONS)
    image = budgets.limit(versions, "x86_64", "image", "size")
    line = next(number for number, text in enumerate(DEFAULT_VERSIONS.read_text().splitlines(), 1)
                if 'size: "160 MiB"' in text)
    assert image is not None and image.value == 160 << 20
    assert image.where == f"{DEFAULT_VERSIONS}:{line} (budgets.architecture.x86_64.image.size)"
    # the typed tree of versions.yaml holds them
    assert versions.budgets is not None
    x86 = versions.budgets.of("x86_64")
    assert x86 is not None and x86.image is not None and x86.image.size == "160 MiB"
    assert budgets.limit(versions, "aarch64", "image", "size") is None  # no budget: nothing checked
    ready = budgets.limit(versions, "x86_64", "initrd", "agent-ready", "tcg")
    assert ready is not None and ready.value == 12.0
    assert budgets.check_boot(versions, "x86_64", "initrd", "tcg", 11.9) is None
    assert "over the initrd budget of 12 s under TCG" in str(budgets.check_boot(versions, "x86_64", "initrd", "tcg", 12.5))
    bad = tmp_path / "versions.yaml"
    bad.write_text(DEFAULT_VERSIONS.read_text().replace('size: "160 MiB"', 'size: "lots"'))
    with pytest.raises(ConfigError, match=rf"versions\.yaml:{line} \(budgets\.architecture\.x86_64\.image\.size\)"):
        load_versions(bad)
    bad.write_text(DEFAULT_VERSIONS.read_text().replace('size: "160 MiB"', 'siz: "160 MiB"'))
    with pytest.raises(ConfigError, match=rf"versions\.yaml:{line} \(budgets\.architecture\.x86_64\.image\.siz\): unknown key 'siz'(?s:.*)did you mean 'size'"):
        load_versions(bad)


def test_elf_sections_name_what_makes_a_binary_big() -> None:
    from osbuilder.evidence.budgets import elf_sections

    sections = elf_sections(Path("/bin/true"))
    assert sections and ".text" in {section.name for section in sections}
    assert sections == sorted(sections, key=lambda section: -section.size)


def test_a_cached_asset_is_held_to_the_budgets_too(tmp_path: Path) -> None:
    """A hit (local or pulled) may come from a --no-budgets build or looser budgets: it is checked
    like a build, by the pinned asset's architecture under either of its names."""
    from osbuilder.evidence.budgets import check_asset
    from osbuilder.paths import DEFAULT_VERSIONS
    from osbuilder.versions import load_versions

    versions = load_versions(DEFAULT_VERSIONS)
    pin = versions.distro_pin("initrd", "x86_64")
    made_as = (pin.distro, pin.release, pin.init is InitMode.AGENT)
    asset = tmp_path / "kata-containers-initrd.img"
    with asset.open("wb") as handle:
        handle.truncate((26 << 20) + 1)  # one byte over the initrd's 26 MiB
    for arch in ("x86_64", "amd64"):
        with pytest.raises(BuildError, match=r"over its budget of 26\.0 MiB \(27262976 bytes\) by 1 bytes"):
            check_asset(versions, arch, "initrd", asset, made_as, None)
    check_asset(versions, "x86_64", "initrd", asset, ("debian", "trixie", True), None)  # not the pinned asset
    # What build-initrd calls on a hit: the plan of the pinned initrd's rootfs, no contributors to
    # name (no rootfs), nothing checked under --no-budgets.
    from osbuilder.context import Context
    from osbuilder.evidence.assets import check_hit
    from osbuilder.paths import DEFAULT_DISTROS_DIR
    from osbuilder.rootfs.plan import Request, plan

    context = Context(versions_path=DEFAULT_VERSIONS, distros_dir=DEFAULT_DISTROS_DIR, cache_dir=tmp_path / "cache")
    context.cache.ensure()
    planned = plan(Request(arch="x86_64"), versions, context.recipe, context.cache.root, "initrd", key_only=True,
                   environment={"SOURCE_DATE_EPOCH": "1"})
    with pytest.raises(BuildError, match=r"over its budget of 26\.0 MiB") as over:
        check_hit(versions, planned, "initrd", asset)
    assert "largest" not in str(over.value)
    check_hit(None, planned, "initrd", asset)
    asset.write_bytes(b"small")
    check_asset(versions, "x86_64", "initrd", asset, made_as, None)
    check_hit(versions, planned, "initrd", asset)


def test_an_entry_built_over_its_budget_is_kept_where_it_was_to_be_delivered(tmp_path: Path) -> None:
    """Built into a cache entry's staging directory, an asset over its budget is copied to the
    output the user asked for, and the error names that path, not the staging one."""
    import yaml

    from osbuilder.evidence.assets import after_build
    from osbuilder.metadata import OSBUILDER_YAML
    from osbuilder.paths import DEFAULT_VERSIONS
    from osbuilder.versions import load_versions

    versions = load_versions(DEFAULT_VERSIONS)
    pin = versions.distro_pin("initrd", "x86_64")
    rootfs = tmp_path / "rootfs"
    (rootfs / OSBUILDER_YAML).parent.mkdir(parents=True)
    (rootfs / OSBUILDER_YAML).write_text(yaml.safe_dump({
        "architecture": "x86_64", "base-distro": {"name": pin.distro, "version": pin.release},
        "agent": {"agent-is-init-daemon": "yes" if pin.init is InitMode.AGENT else "no"}}))
    staged = tmp_path / "staging" / "kata-containers-initrd.img"
    staged.parent.mkdir()
    with staged.open("wb") as handle:
        handle.truncate((26 << 20) + 1)
    output = tmp_path / "out" / "mine.img"
    output.parent.mkdir()
    with pytest.raises(BuildError, match=rf"the initrd mine\.img is (?s:.*){output} was written and is kept"):
        after_build(rootfs, staged, "initrd", 0, arch="x86_64", versions=versions, delivered_as=output)
    assert output.stat().st_size == staged.stat().st_size
    assert after_build(rootfs, staged, "initrd", 0, arch="x86_64", versions=None, delivered_as=output) is None


def test_an_agent_over_its_size_budget_names_its_largest_elf_sections(tmp_path: Path) -> None:
    """build-agent's check (and build-kernel's, with the same function): the file against its size
    budget, the ELF sections named as the contributors."""
    from osbuilder.evidence import budgets
    from osbuilder.paths import DEFAULT_VERSIONS
    from osbuilder.versions import load_versions

    versions = load_versions(DEFAULT_VERSIONS)
    budget = budgets.limit(versions, "x86_64", "agent", "size")
    assert budget is not None
    big = Path("/bin/bash")  # an ELF64 executable larger than the agent's budget
    assert big.stat().st_size > budget.value
    with pytest.raises(BuildError, match=r"the agent bash is .* over its budget(?s:.*)largest ELF sections: \.text "):
        budgets.check_file(versions, "x86_64", "agent", big)
    small = tmp_path / "kata-agent"
    small.write_bytes(b"\x7fELF" + bytes(60))
    budgets.check_file(versions, "x86_64", "agent", small)  # within the budget: nothing said
