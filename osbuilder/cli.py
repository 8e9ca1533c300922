"""The `osbuilder` command line: global options, subcommand dispatch, errors and exit codes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from osbuilder import __version__, progress
from osbuilder.commands import Command, Outcome, discover
from osbuilder.context import Context
from osbuilder.errors import EXIT_BAD_INPUT, EXIT_FAILED, OsbuilderError, UsageError
from osbuilder.options import MAKE_VARIABLES_FLAG, make_environment
from osbuilder.paths import DEFAULT_DISTROS_DIR, DEFAULT_VERSIONS, default_cache_dir
from osbuilder.remote.settings import settings as remote_settings

log = logging.getLogger("osbuilder")


class Terminated(BaseException):
    """SIGTERM/SIGHUP, raised so that cleanup (temporary files, QEMU) runs as for Ctrl-C."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse's own errors are bad input too: exit 2 with the usage line, as argparse does,
        # but through our reporting so --json callers get a JSON error.
        raise UsageError(problem=message, where=self.prog, fix=f"see '{self.prog} --help'")


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """The same options on the root parser and on every subcommand, so they work in either place."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("global options")
    group.add_argument("--versions", type=Path, metavar="FILE", default=default(DEFAULT_VERSIONS),
                       help="versions file with every pinned input (default: the repository's versions.yaml)")
    group.add_argument("--distros-dir", type=Path, metavar="DIR", default=default(DEFAULT_DISTROS_DIR),
                       help="directory of distro recipes (default: the repository's distros/)")
    group.add_argument("--cache-dir", type=Path, metavar="DIR", default=default(None),
                       help="cache directory (default: $OSBUILDER_CACHE_DIR or $XDG_CACHE_HOME/osbuilder)")
    group.add_argument("--offline", action="store_true", default=default(False),
                       help="use only what is in the cache; never download")
    group.add_argument("--json", action="store_true", default=default(False),
                       help="print the result as one JSON object on stdout")
    group.add_argument("-v", "--verbose", action="count", default=default(0),
                       help="more logging (-vv: every command run)")
    remote = parser.add_argument_group("remote cache (an OCI registry shared by several machines)")
    remote.add_argument("--remote-cache", metavar="URL", default=default(None),
                        help="oci://HOST[:PORT]/REPO (oci+http:// for plain HTTP): a local miss is pulled from it, "
                             "what is built is pushed (default: $OSBUILDER_REMOTE_CACHE); credentials come from "
                             "$OSBUILDER_REGISTRY_AUTH (USER:PASSWORD) or the docker configuration file")
    remote.add_argument("--remote-cache-mode", choices=("pull", "push", "readwrite"), default=default(None),
                        help="pull only, push only, or both (default: $OSBUILDER_REMOTE_CACHE_MODE, else readwrite)")
    remote.add_argument("--remote-cache-required", action="store_true", default=default(False),
                        help="fail when the remote cache cannot be used (default: say so once and build locally)")
    remote.add_argument("--remote-cache-ca", type=Path, metavar="FILE", default=default(None),
                        help="the CA (PEM) that signed the registry's certificate")


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="osbuilder",
        description="Build Kata Containers guest assets (kernel, rootfs, DAX image, initrd, release bundle) "
                    "rootless and reproducibly, and boot-check them.",
        epilog="Exit status: 0 success, 1 a build or run failed, 2 bad input or configuration.",
    )
    parser.add_argument("--version", action="version", version=f"osbuilder {__version__}")
    _global_options(parser, suppress=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in commands:
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.description or command.help,
            epilog=command.epilog or None,
            aliases=list(command.aliases),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.configure(sub)
        for table in command.options:
            table.add_to(sub)
        if any(option.make for table in command.options for option in table):
            sub.add_argument(MAKE_VARIABLES_FLAG, action="store_true",
                             help="take options the command line leaves at their defaults from their Make "
                                  "variables in the environment (FS_TYPE=erofs, AGENT_INIT=yes, ...): how the "
                                  "Makefile passes its variables through; SOURCE_DATE_EPOCH defaults to the "
                                  "checkout's commit time")
        _global_options(sub, suppress=True)
        sub.set_defaults(_command=command)
    return parser


def _setup_logging(verbose: int, json_mode: bool) -> None:
    level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose >= 1 or not json_mode else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("osbuilder: %(message)s" if verbose < 2 else
                                           "osbuilder [%(name)s] %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter (urllib3, docker) only at -vv.
    for noisy in ("urllib3", "docker", "libarchive"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    # oras repeats the registry's error messages; osbuilder.remote reports each failure itself.
    logging.getLogger("oras").setLevel(logging.DEBUG if verbose >= 2 else logging.CRITICAL)


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(signal.Signals(signum).name)


def _emit(outcome: Outcome, json_mode: bool) -> None:
    if json_mode:
        sys.stdout.write(json.dumps(outcome.data, indent=2, sort_keys=False, default=str) + "\n")
    elif outcome.text:
        sys.stdout.write(outcome.text.rstrip("\n") + "\n")
    sys.stdout.flush()


def _emit_error(error: OsbuilderError, json_mode: bool) -> None:
    sys.stderr.write(f"osbuilder: error: {error.message()}\n")
    if json_mode:
        sys.stdout.write(json.dumps({"ok": False, "error": error.to_json()}, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    json_mode = "--json" in args_list
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGHUP, _raise_terminated)
    try:
        commands = discover()
        parser = build_parser(commands)
        args = parser.parse_args(args_list)
        json_mode = bool(args.json)
        _setup_logging(args.verbose, json_mode)
        if json_mode:
            progress.set_enabled(False)
        command: Command | None = getattr(args, "_command", None)
        if command is None:
            parser.print_help(sys.stderr)
            return EXIT_BAD_INPUT
        if getattr(args, "make_variables", False):
            # make used to export the checkout's commit time as SOURCE_DATE_EPOCH to every step but
            # the kernel; the steps it starts keep that default, and so do the tools they run.
            os.environ.update(make_environment(os.environ))
        context = Context(
            versions_path=args.versions,
            distros_dir=args.distros_dir,
            cache_dir=args.cache_dir or default_cache_dir(),
            offline=args.offline,
            json=json_mode,
            verbose=args.verbose,
            remote_settings=remote_settings(args.remote_cache, args.remote_cache_mode, args.remote_cache_required,
                                            args.remote_cache_ca),
        )
        outcome = command.run(context, args)
        if context.remote is not None:  # what the remote cache did in this run
            outcome.data["remote_cache"] = context.remote.report()
        _emit(outcome, json_mode)
        return outcome.exit_code
    except OsbuilderError as error:
        _emit_error(error, json_mode)
        return error.exit_code
    except (KeyboardInterrupt, Terminated) as interrupt:
        name = str(interrupt) or "interrupted"
        sys.stderr.write(f"osbuilder: {name}; partial outputs were removed\n")
        return 130 if isinstance(interrupt, KeyboardInterrupt) else 143
    except BrokenPipeError:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
