"""The command line surface: help, exit codes, doctor's advice."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from osbuilder.cli import build_parser, discover
from tests.conftest import run_cli


def test_help_lists_the_subcommands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("versions", "distros", "doctor", "fetch"):
        assert command in result.stdout


def test_every_subcommand_has_help() -> None:
    # In-process: argparse refuses to format the usage of a parser with an empty exclusive group.
    parser = build_parser(discover())
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        assert f"usage: osbuilder {name}" in sub.format_help()
        assert all(group._group_actions for group in sub._mutually_exclusive_groups), name


def test_unknown_option_is_exit_2() -> None:
    result = run_cli("versions", "--no-such-option")
    assert result.returncode == 2
    assert "--no-such-option" in result.stderr


def test_global_options_work_after_the_subcommand(tmp_path: Path) -> None:
    result = run_cli("versions", "assets.agent.version", "--json", "--cache-dir", tmp_path)
    assert result.returncode == 0
    assert json.loads(result.stdout)["value"] == "4.1.0"


def test_doctor_names_the_package_for_a_missing_tool(tmp_path: Path) -> None:
    # A PATH with only the Python interpreter: mmdebstrap (in /usr/bin) is not found.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    result = run_cli("doctor", "--step", "rootfs", "--json", env={"PATH": str(bin_dir)})
    assert result.returncode == 1
    report = json.loads(result.stdout)
    tools = {tool["tool"]: tool for step in report["steps"] for tool in step["tools"]}
    assert tools["mmdebstrap"]["present"] is False
    assert tools["mmdebstrap"]["package"] == "mmdebstrap"
    assert "mmdebstrap" in report["missing_packages"]
    text = run_cli("doctor", "--step", "rootfs", env={"PATH": str(bin_dir)})
    assert "apt-get install mmdebstrap" in text.stdout


def test_doctor_reports_present_tools() -> None:
    result = run_cli("doctor", "--json", env={"PATH": os.environ["PATH"]})
    report = json.loads(result.stdout)
    tools = {tool["tool"]: tool for step in report["steps"] for tool in step["tools"]}
    assert tools["make"]["present"] is True
    assert "user_namespaces" in report["host"]


def test_building_does_not_need_the_agent_client() -> None:
    """Only boot talks to the agent (protobuf); every other command must run on a host Python whose
    protobuf is older, as a rootless build-rootfs does with the system interpreter."""

    script = ("import sys; from osbuilder.commands import discover; names = [c.name for c in discover()]; "
              "print(','.join(names)); print(any(m.startswith('google.protobuf') for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2])
    commands, protobuf_loaded = result.stdout.split()
    assert {"boot", "build-rootfs", "build-image", "bundle"} <= set(commands.split(","))
    assert protobuf_loaded == "False"
