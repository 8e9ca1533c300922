"""Fragment rules of kernel-configs/README.md: selection, tags, syntax, conflicts, whitelist, the check."""

from __future__ import annotations

from pathlib import Path

import pytest

from osbuilder.errors import EXIT_BAD_INPUT, EXIT_FAILED, ConfigError, UsageError
from osbuilder.kernel.fragments import (
    ABSENT,
    Variant,
    check_values,
    find_patches,
    fragment_dirs,
    mismatch_error,
    parse_config,
    parse_fragment,
    parse_whitelist,
    read_config_version,
    select,
)
from osbuilder.paths import KERNEL_CONFIGS_DIR


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def parse(text: str) -> tuple[object, list[str]]:
    fragment, errors = parse_fragment(Path("x.conf"), "x.conf", text)
    return fragment, [error.message() for error in errors]


# --- parsing -------------------------------------------------------------------------------------


def test_parse_values_unset_lines_and_comments() -> None:
    fragment, errors = parse_fragment(Path("f.conf"), "common/f.conf",
                                      '# why\nCONFIG_A=y\n\n# CONFIG_B is not set\nCONFIG_C="text"\n'
                                      "CONFIG_D=256\nCONFIG_E=0x10\nCONFIG_F=-1\n")
    assert errors == []
    assert [(r.symbol, r.value, r.line) for r in fragment.requests] == [
        ("A", "y", 2), ("B", None, 4), ("C", '"text"', 5), ("D", "256", 6), ("E", "0x10", 7), ("F", "-1", 8)]
    assert fragment.requests[1].where == "common/f.conf:4"
    assert fragment.requests[1].text() == "# CONFIG_B is not set"


@pytest.mark.parametrize(("line", "needle"), [
    ("CONFIG_A=m", "no loadable modules"),
    ("CONFIG_A=n", "is not set"),
    ("CONFIG_A=maybe", "not y, a number or a quoted string"),
    ("CONFIG_A=", "not y, a number"),
    ("CONFIG_A=\"unterminated", "not y, a number"),
    ("  CONFIG_A=y", "whitespace"),
    ("#CONFIG_A is not set", "looks like a kconfig line"),
    ("# CONFIG_A=y", "looks like a kconfig line"),
    ("A=y", "is not a kconfig line"),
    ("# !x86", "unknown exclusion tag !x86"),
    ("# !arm64 !s390x", "unknown exclusion tag !s390x"),
])
def test_bad_lines_are_errors_with_file_and_line(line: str, needle: str) -> None:
    _fragment, errors = parse(f"CONFIG_OK=y\n{line}\n")
    assert len(errors) == 1, errors
    assert errors[0].startswith("x.conf:2: ")
    assert needle in errors[0]


def test_tags_are_whole_words_on_a_tag_only_line() -> None:
    fragment, errors = parse("# !arm64 !confidential\nCONFIG_A=y\n")
    assert errors == [] and fragment.tags == {"arm64", "confidential"}  # type: ignore[attr-defined]
    # prose that mentions a !word is a comment, not a tag line
    fragment, errors = parse("# keep this !important note\nCONFIG_A=y\n")
    assert errors == [] and fragment.tags == set()  # type: ignore[attr-defined]
    # !x86_64extra is not !x86_64 (Kata's substring match would have taken it)
    _fragment, errors = parse("# !x86_64extra\n")
    assert "unknown exclusion tag !x86_64extra" in errors[0]


def test_all_problems_of_all_fragments_are_reported_together(tmp_path: Path) -> None:
    configs = write(tmp_path, {"config_version": "1\n", "common/a.conf": "CONFIG_A=m\n",
                               "x86_64/b.conf": "CONFIG_B=n\n# !bogus\n"})
    with pytest.raises(ConfigError) as caught:
        select(configs, Variant("x86_64"))
    text = caught.value.message()
    assert "common/a.conf:1" in text and "x86_64/b.conf:1" in text and "x86_64/b.conf:2" in text
    assert caught.value.exit_code == EXIT_BAD_INPUT


# --- selection -----------------------------------------------------------------------------------


SELECTION_TREE = {
    "config_version": "3\n",
    "common/b.conf": "CONFIG_B=y\n",
    "common/a.conf": "CONFIG_A=y\n",
    "common/README": "not a fragment\n",
    "common/notes.conf.orig": "CONFIG_IGNORED=y\n",
    "common/sub/deep.conf": "CONFIG_DEEP=y\n",
    "common/no-arm.conf": "# !arm64\nCONFIG_NOARM=y\n",
    "common/no-conf.conf": "# !confidential\nCONFIG_NOCONF=y\n",
    "x86_64/x.conf": "CONFIG_X=y\n",
    "arm64/r.conf": "CONFIG_R=y\n",
    "build-type/exp/e.conf": "CONFIG_E=y\n",
    "measured/m.conf": "CONFIG_M=y\n",
    "confidential/common/c.conf": "CONFIG_C=y\n",
    "confidential/x86_64/t.conf": "CONFIG_T=y\n",
    "debug/d.conf": "CONFIG_D=y\n",
}


def labels(configs: Path, variant: Variant, extra: tuple[Path, ...] = ()) -> list[str]:
    return [fragment.label for fragment in select(configs, variant, extra).fragments]


def test_selection_order_top_level_sorted_and_tags(tmp_path: Path) -> None:
    configs = write(tmp_path, SELECTION_TREE)
    assert labels(configs, Variant("x86_64")) == [
        "common/a.conf", "common/b.conf", "common/no-arm.conf", "common/no-conf.conf", "x86_64/x.conf",
        "measured/m.conf"]
    assert labels(configs, Variant("arm64", measured=False)) == [
        "common/a.conf", "common/b.conf", "common/no-conf.conf", "arm64/r.conf"]
    extra = write(tmp_path / "elsewhere", {"mine.conf": "CONFIG_MINE=y\n"}) / "mine.conf"
    assert labels(configs, Variant("x86_64", confidential=True, debug=True, build_type="exp"), (extra,)) == [
        "common/a.conf", "common/b.conf", "common/no-arm.conf", "x86_64/x.conf", "build-type/exp/e.conf",
        "measured/m.conf", "confidential/common/c.conf", "confidential/x86_64/t.conf", "debug/d.conf", str(extra)]
    selection = select(configs, Variant("x86_64", confidential=True))
    assert [fragment.label for fragment in selection.skipped] == ["common/no-conf.conf"]
    assert "CONFIG_NOCONF" not in selection.merged_text()


def test_variant_errors_are_bad_input(tmp_path: Path) -> None:
    configs = write(tmp_path, SELECTION_TREE)
    with pytest.raises(UsageError, match="no confidential guest support for arm64"):
        fragment_dirs(configs, Variant("arm64", confidential=True))
    with pytest.raises(UsageError, match="unknown build type 'nope'") as caught:
        fragment_dirs(configs, Variant("x86_64", build_type="nope"))
    assert "exp" in caught.value.fix
    with pytest.raises(UsageError, match="always has a measured rootfs"):
        fragment_dirs(configs, Variant("x86_64", confidential=True, measured=False))
    with pytest.raises(UsageError, match="no such fragment"):
        select(configs, Variant("x86_64"), (tmp_path / "missing.conf",))


def test_suffixes_follow_kata() -> None:
    assert Variant("x86_64").suffix == ""
    assert Variant("x86_64", confidential=True, measured=True).suffix == ""
    assert Variant("x86_64", debug=True).suffix == "-debug"
    assert Variant("x86_64", build_type="experimental").suffix == "-experimental"
    assert Variant("arm64", debug=True, build_type="experimental").suffix == "-debug-experimental"


# --- conflicts -----------------------------------------------------------------------------------


def test_two_fragments_that_disagree_name_both_places(tmp_path: Path) -> None:
    configs = write(tmp_path, {"config_version": "1\n", "common/a.conf": "# a\nCONFIG_SAME=y\nCONFIG_X=y\n",
                               "x86_64/b.conf": "\n\n\n# CONFIG_X is not set\n"})
    with pytest.raises(ConfigError) as caught:
        select(configs, Variant("x86_64", measured=False))
    message = caught.value.message()
    assert "CONFIG_X is set to different values: y at common/a.conf:3 and is not set at x86_64/b.conf:4" in message


def test_the_same_value_twice_is_an_error_too(tmp_path: Path) -> None:
    configs = write(tmp_path, {"config_version": "1\n", "common/a.conf": "CONFIG_A=y\n",
                               "common/b.conf": "CONFIG_A=y\n"})
    with pytest.raises(ConfigError, match="CONFIG_A is requested twice: y at common/a.conf:1 and y at common/b.conf:1"):
        select(configs, Variant("x86_64", measured=False))


def test_a_conflict_in_an_excluded_file_does_not_count(tmp_path: Path) -> None:
    configs = write(tmp_path, {"config_version": "1\n", "common/a.conf": "CONFIG_A=y\n",
                               "common/b.conf": "# !x86_64\n# CONFIG_A is not set\n"})
    assert len(select(configs, Variant("x86_64", measured=False)).requests) == 1


# --- whitelist -----------------------------------------------------------------------------------


def test_whitelist_ignores_blank_and_comment_lines_and_matches_whole_names(tmp_path: Path) -> None:
    path = tmp_path / "whitelist.conf"
    path.write_text("# header\n\n   \nCONFIG_FOO\nBAR  # renamed in 6.13\n# CONFIG_COMMENTED\n")
    whitelist = parse_whitelist(path)
    assert whitelist.symbols == {"FOO", "BAR"}
    assert "FOO" in whitelist and "FOO_BAR" not in whitelist and "FO" not in whitelist
    assert "COMMENTED" not in whitelist
    assert parse_whitelist(tmp_path / "absent.conf").symbols == frozenset()


def test_whitelist_rejects_patterns_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "whitelist.conf"
    path.write_text("FOO\nNF_NAT_*\n")
    with pytest.raises(ConfigError, match=r"whitelist.conf:2: 'NF_NAT_\*' is not a kconfig symbol name"):
        parse_whitelist(path)


def test_the_repository_whitelist_is_empty_for_6_12() -> None:
    assert parse_whitelist(KERNEL_CONFIGS_DIR / "whitelist.conf").symbols == frozenset()


# --- the value check on synthetic .config texts --------------------------------------------------


CONFIG = """\
#
# Linux/x86_64 6.12.107 Kernel Configuration
#
CONFIG_A=y
# CONFIG_B is not set
CONFIG_NR_CPUS=64
CONFIG_STR="hello"
# CONFIG_UNSET is not set
"""


def requests(text: str) -> list:  # type: ignore[type-arg]
    fragment, errors = parse_fragment(Path("f.conf"), "f.conf", text)
    assert errors == []
    return list(fragment.requests)


def test_parse_config() -> None:
    assert parse_config(CONFIG) == {"A": "y", "B": None, "NR_CPUS": "64", "STR": '"hello"', "UNSET": None}


def test_check_values() -> None:
    values = parse_config(CONFIG)
    wanted = requests('CONFIG_A=y\n# CONFIG_UNSET is not set\nCONFIG_STR="hello"\nCONFIG_B=y\n'
                      "CONFIG_NR_CPUS=256\nCONFIG_MISSPELT=y\n# CONFIG_A is not set\n# CONFIG_GONE is not set\n"
                      'CONFIG_STR2="x"\n')
    found = {m.request.symbol: m for m in check_values(wanted, values, parse_whitelist(Path("/nonexistent")))}
    assert set(found) == {"B", "NR_CPUS", "MISSPELT", "A", "GONE", "STR2"}
    assert found["B"].actual is None and found["B"].shown_actual == "is not set"
    assert found["NR_CPUS"].actual == "64"
    assert found["MISSPELT"].actual == ABSENT
    # an unset request is met only by an explicit "is not set" line, not by absence
    assert found["GONE"].actual == ABSENT
    assert found["A"].actual == "y" and found["A"].request.value is None


def test_whitelisted_mismatches_are_flagged_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "whitelist.conf"
    path.write_text("MISSPELT\n")
    found = check_values(requests("CONFIG_MISSPELT=y\nCONFIG_MISSPELT_TOO=y\n"), {}, parse_whitelist(path))
    assert [(m.request.symbol, m.whitelisted) for m in found] == [("MISSPELT", True), ("MISSPELT_TOO", False)]


def test_mismatch_error_lists_option_values_place_and_reason(tmp_path: Path) -> None:
    tree = write(tmp_path / "tree", {"Kconfig": "source \"drivers/Kconfig\"\n",
                                     "drivers/Kconfig": "config NR_CPUS\n\tint \"cpus\"\n\trange 2 512\n"
                                                        "\tdepends on SMP\n\nconfig OTHER\n\tbool\n"})
    found = check_values(requests("CONFIG_NR_CPUS=9999\nCONFIG_MISPELT=y\n"), {"NR_CPUS": "64"},
                         parse_whitelist(Path("/nonexistent")))
    error = mismatch_error(found, "Linux 6.12.107 (x86_64)", tree)
    assert error.exit_code == EXIT_FAILED
    text = error.message()
    assert "f.conf:1: CONFIG_NR_CPUS: requested 9999, got 64 (defined at drivers/Kconfig:1; range 2 512; " \
           "depends on SMP)" in text
    assert "f.conf:2: CONFIG_MISPELT: requested y, got absent from .config (no such option in this kernel" in text
    data = error.to_json()
    assert data["mismatches"][0]["symbol"] == "CONFIG_NR_CPUS"  # type: ignore[index]


# --- config_version and patches -----------------------------------------------------------------


def test_config_version(tmp_path: Path) -> None:
    (tmp_path / "config_version").write_text("12\n")
    assert read_config_version(tmp_path) == "12"
    (tmp_path / "config_version").write_text("1.2\n")
    with pytest.raises(ConfigError, match="one integer"):
        read_config_version(tmp_path)
    assert read_config_version(KERNEL_CONFIGS_DIR).isdigit()


def test_patches_in_numeric_order_then_build_type(tmp_path: Path) -> None:
    write(tmp_path, {"patches/6.12.x/0010-late.patch": "b", "patches/6.12.x/0002-early.patch": "a",
                     "patches/6.12.x/README.md": "ignored", "patches/6.12.x/exp/0001-exp.patch": "c",
                     "patches/6.13.x/0001-other.patch": "d"})
    assert [p.label for p in find_patches(tmp_path, "6.12.107", None)] == [
        "patches/6.12.x/0002-early.patch", "patches/6.12.x/0010-late.patch"]
    assert [p.label for p in find_patches(tmp_path, "6.12.107", "exp")][-1] == "patches/6.12.x/exp/0001-exp.patch"
    assert find_patches(tmp_path, "6.1.1", None) == []  # a missing directory is not an error
    write(tmp_path, {"patches/6.12.x/fix.patch": "x"})
    with pytest.raises(ConfigError, match="no NNNN- number"):
        find_patches(tmp_path, "6.12.107", None)


# --- the repository's own fragments --------------------------------------------------------------


@pytest.mark.parametrize("variant", [
    Variant("x86_64"), Variant("x86_64", measured=False), Variant("x86_64", confidential=True),
    Variant("x86_64", debug=True), Variant("x86_64", build_type="experimental"),
    Variant("x86_64", confidential=True, debug=True), Variant("arm64"), Variant("arm64", measured=False),
    Variant("arm64", debug=True, build_type="experimental"),
], ids=lambda v: f"{v.arch}-c{int(v.confidential)}m{int(v.measured)}d{int(v.debug)}-{v.build_type}")
def test_every_repository_variant_parses_without_conflicts(variant: Variant) -> None:
    selection = select(KERNEL_CONFIGS_DIR, variant)
    assert len(selection.requests) > 300
    requested = selection.requested()
    assert requested["MODULES"].value is None  # monolithic guest
    assert ("DM_VERITY" in requested) == variant.measured
    assert ("INTEL_TDX_GUEST" in requested) == variant.confidential
    assert ("BLK_DEV_PMEM" in requested) == (not variant.confidential)  # dax.conf is !confidential
