"""The release bundle from the default assets: layout, checksums, reproducibility, runtime matching,
and booting what ships with its own configuration."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from osbuilder.boot.runtimeconfig import read_runtime_config
from osbuilder.kernelcmdline import RootSpec, root_params
from tests.conftest import REPO, run_cli
from tests.helpers.assets import BootAssets
from tests.helpers.bundle import EPOCH, Built, make_bundle
from tests.helpers.httpserver import FixtureServer
from tests.helpers.runtime import make_runtime_tarball

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEFAULTS = "opt/kata/share/defaults/kata-containers"
SHARE = "opt/kata/share/kata-containers"


def test_layout_as_tar_shows_it(release_bundle: Built, assets: BootAssets) -> None:
    assert release_bundle.tarball.name == f"kata-static-{assets.agent_version}-amd64.tar.zst"
    listing = subprocess.run(["tar", "--zstd", "-tvf", release_bundle.tarball], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    names = {line.split()[5].removeprefix("./"): line for line in listing}
    for link in ("vmlinux.container", "vmlinuz.container", "kata-containers.img", "kata-containers-initrd.img",
                 "kata-containers-measured.img"):
        assert names[f"{SHARE}/{link}"].startswith("l"), link
    assert f"{SHARE}/kata-ubuntu-noble.image" in names
    assert f"{SHARE}/kata-debian-bookworm.initrd" in names
    assert f"{SHARE}/root_hash_measured.txt" in names
    for config in ("qemu", "qemu-initrd", "qemu-measured", "clh", "fc"):
        assert f"{DEFAULTS}/configuration-{config}.toml" in names
    assert "opt/kata/runtime-rs/bin/containerd-shim-kata-v2" in names
    for meta in ("VERSION", "versions.yaml", "SHA256SUMS", "osbuilder-manifest.json"):
        assert f"opt/kata/{meta}" in names
    # Owner 0 and clamped times on every entry.
    assert all(" root/root " in line for line in listing)
    assert all(line.split()[3] == "2025-11-24" for line in listing)
    assert (release_bundle.extracted / "opt/kata/VERSION").read_text().strip() == assets.agent_version


def test_sha256sums_pass_inside(release_bundle: Built) -> None:
    result = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=release_bundle.extracted / "opt/kata",
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    checked = [line for line in result.stdout.splitlines() if line.endswith(": OK")]
    assert len(checked) >= 12


def test_manifest_records_files_and_inputs(release_bundle: Built, assets: BootAssets, runtime_tarball: Path) -> None:
    manifest = json.loads((release_bundle.extracted / "opt/kata/osbuilder-manifest.json").read_text())
    files = {entry["path"]: entry for entry in manifest["files"]}
    image = release_bundle.extracted / SHARE / "kata-ubuntu-noble.image"
    assert files[f"{SHARE}/kata-ubuntu-noble.image"]["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    inputs = manifest["inputs"]
    assert inputs["kernel"]["source"]["sha256"] and inputs["kernel"]["config"]["sha256"]
    assert inputs["runtime"]["sha256"] == hashlib.sha256(runtime_tarball.read_bytes()).hexdigest()
    assert inputs["runtime"]["source"] == runtime_tarball.name  # not where it lay on the machine that bundled
    image_rootfs = inputs["guests"]["image"]["rootfs"]
    assert image_rootfs["recipe"]["name"] == "ubuntu"
    assert any(package["name"] == "systemd" for package in image_rootfs["packages"])
    assert inputs["agent"]["sha256"] and inputs["agent"]["version"] == assets.agent_version


def test_rebuild_gives_the_same_bytes(release_bundle: Built, assets: BootAssets, runtime_tarball: Path,
                                      signing_key: tuple[Path, Path], tmp_path: Path) -> None:
    # The same runtime from another directory, as on another runner.
    elsewhere = tmp_path / "elsewhere" / runtime_tarball.name
    elsewhere.parent.mkdir()
    shutil.copyfile(runtime_tarball, elsewhere)
    code, stdout, stderr = make_bundle(assets, tmp_path, elsewhere, "--sign-key", signing_key[0])
    assert code == 0, stderr
    again = json.loads(stdout)
    assert hashlib.sha256(Path(again["bundle"]).read_bytes()).hexdigest() == \
        hashlib.sha256(release_bundle.tarball.read_bytes()).hexdigest()  # SBOMs and reference values included
    assert Path(again["provenance"]).read_bytes() == Path(str(release_bundle.report["provenance"])).read_bytes()


def test_configurations_parse_and_point_at_the_assets(release_bundle: Built) -> None:
    defaults = release_bundle.extracted / DEFAULTS
    for path in defaults.glob("*.toml"):
        data = tomllib.loads(path.read_text())
        section = next(iter(data["hypervisor"].values()))
        assert ("image" in section) != ("initrd" in section), path.name
        assert section["kernel"] == "/opt/kata/share/kata-containers/vmlinux.container"
    image = read_runtime_config(defaults / "configuration-qemu.toml", root=release_bundle.extracted)
    assert image.image is not None and image.image.resolve().name == "kata-ubuntu-noble.image"
    assert image.nvdimm and image.verity is None
    assert root_params(RootSpec("image", image.rootfs_type, image.nvdimm, image.verity))[:2] == [
        "root=/dev/pmem0p1", "rootflags=dax,data=ordered,errors=remount-ro"]
    initrd = read_runtime_config(defaults / "configuration-qemu-initrd.toml", root=release_bundle.extracted)
    assert initrd.initrd is not None and initrd.initrd.resolve().name == "kata-debian-bookworm.initrd"
    assert root_params(RootSpec("initrd")) == []
    measured = read_runtime_config(defaults / "configuration-qemu-measured.toml", root=release_bundle.extracted)
    recorded = (release_bundle.extracted / SHARE / "root_hash_measured.txt").read_text().strip()
    assert measured.verity is not None and measured.verity.format() == recorded
    params = root_params(RootSpec("image", measured.rootfs_type, measured.nvdimm, measured.verity))
    assert params[0].startswith('dm-mod.create="dm-verity,,,ro,0 ') and params[1] == "root=/dev/dm-0"
    clh = tomllib.loads((defaults / "configuration-clh.toml").read_text())["hypervisor"]["clh"]
    assert clh["disable_image_nvdimm"] is True and clh["image"].endswith("kata-containers.img")


def test_boot_the_bundle_with_its_own_configuration(release_bundle: Built) -> None:
    result = run_cli("boot", "--bundle", release_bundle.tarball, "--accel", "tcg", "--json", timeout=1200)
    report = json.loads(result.stdout)
    assert result.returncode == 0, json.dumps(report, indent=1)[-3000:]
    boots = {boot["config"]: boot for boot in report["boots"]}
    assert set(boots) == {"configuration-qemu.toml", "configuration-qemu-initrd.toml",
                          "configuration-qemu-measured.toml"}
    assert all(boot["ok"] and boot["agent"]["status"] == "SERVING" for boot in boots.values())
    assert boots["configuration-qemu.toml"]["dax"] is True
    assert boots["configuration-qemu-initrd.toml"]["kind"] == "initrd"


def test_a_runtime_of_another_version_is_refused(assets: BootAssets, tmp_path: Path) -> None:
    other = make_runtime_tarball(tmp_path / "runtime", "9.9.9")
    out = tmp_path / "out"
    out.mkdir()
    code, _stdout, stderr = make_bundle(assets, out, other)
    assert code == 2
    assert "9.9.9" in stderr and assets.agent_version in stderr
    assert list(out.iterdir()) == []


def test_a_runtime_download_with_a_wrong_sha256_is_refused(assets: BootAssets, tmp_path: Path,
                                                           http_server: FixtureServer) -> None:
    tarball = make_runtime_tarball(tmp_path / "runtime", assets.agent_version)
    url = http_server.add("kata-static.tar.zst", tarball.read_bytes())
    versions = tmp_path / "versions.yaml"
    text = (REPO / "versions.yaml").read_text()
    start = text.index("  runtime:")
    section = text[start:text.index("\nexternals:")]
    patched = section
    for line in section.splitlines():
        if line.strip().startswith("url:"):
            patched = patched.replace(line, f'        url: "{url}"')
        if line.strip().startswith("sha256:"):
            patched = patched.replace(line, f'        sha256: "{"0" * 64}"')
    versions.write_text(text.replace(section, patched))
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("--versions", versions, "--cache-dir", cache, *_bundle_args(assets, out), timeout=600)
    assert result.returncode == 1, result.stderr
    assert "sha256 mismatch" in result.stderr
    assert list(out.iterdir()) == []
    assert not [path for path in (cache / "downloads").rglob("*") if path.is_file()]
    assert http_server.files["kata-static.tar.zst"].served_full == 1


def _bundle_args(assets: BootAssets, out: Path) -> list[str | Path]:
    return ["bundle", "--kernel-dir", assets.kernel.parent, "--image", assets.systemd_image, "--initrd",
            assets.agent_initrd, "--source-date-epoch", EPOCH, "-o", out]


# --- evidence: SBOMs, provenance, reference values, verify, report --------------------------------


def _statement(release_bundle: Built, public: Path) -> dict[str, object]:
    from osbuilder.evidence.provenance import open_statement

    provenance = Path(str(release_bundle.report["provenance"]))
    assert provenance.name == release_bundle.tarball.name + ".intoto.jsonl"  # signed: a DSSE envelope
    return open_statement(provenance, public)


def test_provenance_subjects_match_sha256sums(release_bundle: Built, signing_key: tuple[Path, Path]) -> None:
    statement = _statement(release_bundle, signing_key[1])
    subjects = {subject["name"]: subject["digest"]["sha256"] for subject in statement["subject"]}  # type: ignore[union-attr, index]
    sums = dict(reversed(line.split("  ", 1)) for line in
                (release_bundle.extracted / "opt/kata/SHA256SUMS").read_text().splitlines())
    listed = {name: digest for name, digest in subjects.items()
              if name not in (release_bundle.tarball.name, "opt/kata/SHA256SUMS")}
    assert listed == {f"opt/kata/{name}": digest for name, digest in sums.items()}
    assert subjects[release_bundle.tarball.name] == hashlib.sha256(release_bundle.tarball.read_bytes()).hexdigest()
    dependencies = {entry["name"]: entry for entry in
                    statement["predicate"]["buildDefinition"]["resolvedDependencies"]}  # type: ignore[index]
    assert dependencies["kernel-source"]["digest"]["sha256"] == \
        "775b9ef84d7fa7927ccebfec33fbbe9aeb2482ebf9a92c771aafd33fb6e2ee27"  # versions.yaml's pin
    assert any(name.endswith("noble InRelease") for name in dependencies)  # the signed indexes, by digest
    assert any(name.endswith("bookworm InRelease") for name in dependencies)
    parameters = statement["predicate"]["buildDefinition"]["externalParameters"]  # type: ignore[index]
    assert parameters["source_date_epoch"] == int(EPOCH)


def test_bundle_sboms_validate_and_relate_the_assets(release_bundle: Built) -> None:
    from osbuilder.evidence.sbom import validate

    sbom_dir = release_bundle.extracted / "opt/kata/sbom"
    texts = {path.name: path.read_text() for path in sbom_dir.glob("*.cdx.json")}
    assert set(texts) == {"kata-static.cdx.json", "kata-ubuntu-noble.image.cdx.json",
                          "kata-debian-bookworm.initrd.cdx.json", "kata-ubuntu-noble-measured.image.cdx.json"}
    for name, text in texts.items():
        assert validate(text) == [], name
    bundle = json.loads(texts["kata-static.cdx.json"])
    components = {component["bom-ref"]: component for component in bundle["components"]}
    for name, text in texts.items():
        if name == "kata-static.cdx.json":
            continue
        asset = components[f"asset:share/kata-containers/{name.removesuffix('.cdx.json')}"]
        reference = asset["externalReferences"][0]
        serial = json.loads(text)["serialNumber"]
        assert reference["url"] == serial.replace("urn:uuid:", "urn:cdx:") + "/1"
        assert reference["hashes"][0]["content"] == hashlib.sha256(text.encode()).hexdigest()
    kernel = next(component for component in bundle["components"] if component["bom-ref"].startswith("kernel:"))
    properties = {item["name"]: item["value"] for item in kernel["properties"]}
    record = json.loads(next((release_bundle.extracted / SHARE).parent.parent.glob("osbuilder-manifest.json")).read_text())
    assert properties["osbuilder:config-sha256"] == record["inputs"]["kernel"]["config"]["sha256"]
    assert properties["osbuilder:source-sha256"] == record["inputs"]["kernel"]["source"]["sha256"]
    assert kernel["version"] == "6.12.107"


def _copy(release_bundle: Built, tmp_path: Path) -> Path:
    """A copy of the extracted bundle whose files can be changed (hard links, broken on write)."""
    root = tmp_path / "bundle"
    subprocess.run(["cp", "-al", release_bundle.extracted, root], check=True)
    return root


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.unlink()  # not the hard-linked original
    path.write_bytes(bytes(data))


def _verify(target: Path, *extra: str | Path) -> tuple[int, dict[str, object], str]:
    result = run_cli("verify", target, "--json", *extra, timeout=600)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}, result.stderr


def test_verify_passes_on_the_fresh_bundle_with_its_signed_provenance(release_bundle: Built,
                                                                        signing_key: tuple[Path, Path]) -> None:
    code, report, stderr = _verify(release_bundle.tarball, "--public-key", signing_key[1])
    assert code == 0, (report, stderr)
    assert report["signed"] is True and report["mismatches"] == []
    checked = report["checked"]
    assert checked["measured"] == ["share/kata-containers/kata-ubuntu-noble-measured.image"]  # type: ignore[index]
    assert len(checked["configurations"]) == 5  # type: ignore[index, arg-type]


def test_verify_refuses_another_key(release_bundle: Built, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    other = tmp_path / "other.pub"
    other.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.PEM,
                                                                          PublicFormat.SubjectPublicKeyInfo))
    result = run_cli("verify", release_bundle.tarball, "--public-key", other, timeout=600)
    assert result.returncode == 1 and "does not verify" in result.stderr


@pytest.mark.parametrize("where", ["data partition", "hash partition", "kernel", "reference-values.json"])
def test_verify_names_the_first_mismatch_after_one_flipped_byte(release_bundle: Built, tmp_path: Path, where: str) -> None:
    from osbuilder.image.layout import read_layout

    root = _copy(release_bundle, tmp_path)
    measured = root / SHARE / "kata-ubuntu-noble-measured.image"
    layout = read_layout(measured)
    assert layout.hash is not None
    kernel = next((root / SHARE).glob("vmlinux-*"))
    target, offset, expected = {
        # a byte in the middle of the ext4 data (the superblock region stays intact)
        "data partition": (measured, layout.root.offset + layout.root.size // 2, "dm-verity root hash"),
        "hash partition": (measured, layout.hash.offset + 100, "hash partition does not hold"),
        "kernel": (kernel, 4096, kernel.name),
        "reference-values.json": (root / "opt/kata/reference-values.json", 40, "reference-values.json"),
    }[where]
    _flip(target, offset)
    code, report, stderr = _verify(root)
    assert code == 1, (report, stderr)
    first = report["mismatches"][0]  # type: ignore[index]
    assert expected in first, first
    assert target.name in first, first


SECTIONS = ("sizes", "boot", "inputs", "packages")


def test_report_renders_in_headless_chromium_with_its_four_sections(release_bundle: Built) -> None:
    """The page, with the boot checks run for its timeline, opened by Debian's Chromium (network
    closed, fresh profile): no console errors, the four sections shown, a screenshot at 1366x768
    kept in build/test-report/ for people to look at."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    out = REPO / "build" / "test-report"
    out.mkdir(parents=True, exist_ok=True)
    page = out / "report.html"
    result = run_cli("report", release_bundle.tarball, "-o", page, "--boot", "--json", timeout=1800)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert len(summary["boots"]) == 3 and all(boot["ok"] for boot in summary["boots"])
    html = page.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # nothing to fetch
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run",
                     f"--user-data-dir={out / 'profile'}", "--window-size=1366,768"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1366, "height": 768, "deviceScaleFactor": 1, "mobile": False})
        driver.get(page.as_uri())
        for section in SECTIONS:
            element = driver.find_element(By.ID, section)
            assert element.is_displayed() and element.size["height"] > 50, section
        assert driver.find_elements(By.CSS_SELECTOR, "#boot svg rect")  # the timeline was drawn
        rows = driver.find_elements(By.CSS_SELECTOR, "#package-table tbody tr")
        assert len(rows) > 100
        search = driver.find_element(By.ID, "package-search")
        search.send_keys("libc6")
        shown = [row for row in rows if row.is_displayed()]
        assert 0 < len(shown) < len(rows) and all("libc6" in row.text for row in shown)
        search.send_keys(Keys.CONTROL, "a")
        search.send_keys(Keys.DELETE)
        assert all(row.is_displayed() for row in rows[:20])
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(out / "report-1366x768.png"))
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1366, "height": int(height), "deviceScaleFactor": 1, "mobile": False})
        driver.save_screenshot(str(out / "report-full.png"))
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        driver.quit()
    assert errors == []
