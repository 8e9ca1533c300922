"""Every option is declared once: the argparse options of build-rootfs, build-image, build-initrd,
boot and run are their option tables, each Make variable means what its flag means, and the Makefile only
passes its variables through."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pytest

from osbuilder import cli, options
from osbuilder.commands import Command, discover
from osbuilder.modes import Backend
from osbuilder.options import Kind, Option
from osbuilder.rootfs.options import ROOTFS
from tests.conftest import REPO

COMMANDS = ("build-rootfs", "build-image", "build-initrd", "boot", "run")
GLOBAL = {"-h", "--help", "--versions", "--distros-dir", "--cache-dir", "--offline", "--json", "-v", "--verbose",
          "--remote-cache", "--remote-cache-mode", "--remote-cache-required", "--remote-cache-ca",
          options.MAKE_VARIABLES_FLAG}


def _commands() -> dict[str, Command]:
    return {command.name: command for command in discover()}


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser(discover())
    action = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    sub: argparse.ArgumentParser = action.choices[name]
    return sub


@pytest.mark.parametrize("name", COMMANDS)
def test_the_command_line_is_the_option_tables(name: str) -> None:
    command = _commands()[name]
    parser = _subparser(name)
    parsed = {flag for action in parser._actions for flag in action.option_strings} - GLOBAL
    positional = {action.dest for action in parser._actions if not action.option_strings and action.dest != "help"}
    declared = {flag for table in command.options for option in table for flag in option.flags}
    assert parsed == declared
    assert positional == {option.dest for table in command.options for option in table if not option.flags}
    options.tables_of(*command.options)  # no flag declared twice


def test_build_image_and_build_initrd_take_build_rootfs_options_from_the_same_table() -> None:
    commands = _commands()
    for name in ("build-rootfs", "build-image", "build-initrd"):
        assert any(table is ROOTFS for table in commands[name].options), name
    # the option that had drifted: --agent-name is there for every command that builds a rootfs
    for name in ("build-rootfs", "build-image", "build-initrd"):
        assert "--agent-name" in {flag for action in _subparser(name)._actions for flag in action.option_strings}


def _sample(option: Option) -> tuple[str, list[str]]:
    """A Make value and the command-line arguments meaning the same."""
    flag = option.flags[0] if option.flags else None
    if option.enum is Backend:
        return "true", [flag or "", "docker"]
    if option.kind is Kind.FLAG:
        return "yes", [flag or ""]
    if option.kind is Kind.LIST:
        return "strace,gdb less", [flag or "", "strace", "gdb", "less"]
    if option.kind in (Kind.INT, Kind.FLOAT):
        return "7", [flag or "", "7"]
    value = "/somewhere/x" if option.kind is Kind.PATH else (
        next(choice for choice in option.allowed if choice != option.default) if option.allowed else "some-value")
    return value, ([flag, value] if flag else [value])


def _parse(name: str, argv: list[str], environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    for variable in [option.make for table in _commands()[name].options for option in table if option.make]:
        monkeypatch.delenv(variable or "", raising=False)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    parser = cli.build_parser(discover())
    args = parser.parse_args([name, *argv])
    before = vars(args).copy()
    found = options.values(args, *args._command.options)
    assert vars(args) == before  # the parsed arguments are read, never changed
    return found


@pytest.mark.parametrize("name", COMMANDS)
def test_each_make_variable_means_its_option(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # --make-variables would default it
    tables = _commands()[name].options
    for option in (option for table in tables for option in table if option.make):
        make_value, argv = _sample(option)
        from_make = _parse(name, [options.MAKE_VARIABLES_FLAG], {option.make or "": make_value}, monkeypatch)
        from_flag = _parse(name, argv, {}, monkeypatch)
        assert from_make[option.dest] == from_flag[option.dest] != option.request_value(option.default), option.make
        # The command line wins over the environment.
        if option.flags and option.kind not in (Kind.FLAG,):
            both = _parse(name, [options.MAKE_VARIABLES_FLAG, *argv], {option.make or "": make_value}, monkeypatch)
            assert both[option.dest] == from_flag[option.dest]
    # Without --make-variables the environment is not read.
    option = next(option for table in tables for option in table if option.make)
    make_value, _argv = _sample(option)
    assert _parse(name, [], {option.make or "": make_value}, monkeypatch)[option.dest] == option.request_value(
        option.default)


def test_a_bad_make_value_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(options.UsageError, match="AGENT_INIT=maybe"):
        _parse("build-rootfs", [options.MAKE_VARIABLES_FLAG], {"AGENT_INIT": "maybe"}, monkeypatch)
    with pytest.raises(options.UsageError, match="FS_TYPE=ntfs"):
        _parse("build-image", [options.MAKE_VARIABLES_FLAG], {"FS_TYPE": "ntfs"}, monkeypatch)


def _recipe(makefile: str, target: str) -> str:
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert match, target
    return match.group(1)


def test_the_makefile_passes_the_table_variables_through() -> None:
    makefile = (REPO / "Makefile").read_text()
    commands = _commands()
    step_variables = {option.make for name in ("build-rootfs", "build-image", "build-initrd")
                      for table in commands[name].options for option in table if option.make}
    boot_variables = {option.make for name in ("boot", "run") for table in commands[name].options for option in table
                      if option.make}
    # The Makefile documents exactly the variables of the tables...
    header = makefile.split("ARCH ?=", 1)[0]
    named = set(re.findall(r"\b[A-Z][A-Z0-9_]{2,}\b", header.split("The build steps' own knobs", 1)[1]))
    assert step_variables <= named and named - step_variables <= {"SOURCE_DATE_EPOCH"}
    # ...and interprets none of them: no recipe of these targets reads one, no default is assigned
    # (ARCH is the kernel's and the bundle's argument too).
    for target, command in (("rootfs", "build-rootfs"), ("image", "build-image"), ("initrd", "build-initrd"),
                            ("boot", "boot"), ("run", "run")):
        recipe = _recipe(makefile, target)
        assert f"{command} $(MAKE_VARIABLES)" in recipe, target
        assert not {variable for variable in step_variables | boot_variables if f"$({variable})" in recipe}, target
    assigned = set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*[?:]?=", makefile, re.MULTILINE))
    assert assigned & (step_variables | boot_variables) == {"ARCH"}
    assert "MAKE_VARIABLES := --make-variables" in makefile


def test_boot_and_run_read_what_to_boot_and_how_from_the_same_tables() -> None:
    from osbuilder.boot.options import ASSETS, HOW

    commands = _commands()
    for name in ("boot", "run"):
        assert any(table is ASSETS for table in commands[name].options), name
        assert any(table is HOW for table in commands[name].options), name


@pytest.mark.parametrize(("argv", "command"), [
    (["--", "sh", "-c", "echo hi"], ("sh", "-c", "echo hi")),
    (["sh", "-c", "echo --x"], ("sh", "-c", "echo --x")),
    ([], ()),
])
def test_the_command_after_double_dash_is_the_requests_tuple(argv: list[str], command: tuple[str, ...],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    found = _parse("run", ["--rootfs", "/r", *argv], {}, monkeypatch)
    assert found["command"] == command and found["rootfs"] == Path("/r")
