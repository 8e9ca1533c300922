"""osbuilder inspect: decode a kernel, an image or an initrd (each kind is an inspector module)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.errors import EXIT_FAILED, UsageError
from osbuilder.inspectors import InspectOptions, discover, identify, kinds

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, metavar="PATH", help="a kernel, a kernel config, an image or an initrd")
    parser.add_argument("--kind", help="skip detection: " + ", ".join(kinds()))
    parser.add_argument("--root-hash-file", type=Path, metavar="FILE",
                        help="the measured image's root hash record (default: a matching root_hash*.txt next to it)")
    parser.add_argument("--verify", action="store_true", help="also recompute the whole dm-verity tree")


def run(context: Context, args: argparse.Namespace) -> Outcome:
    path: Path = args.path
    if not path.is_file():
        raise UsageError(problem="no such file", where=str(path), fix="give the path of a built asset")
    inspectors = {inspector.kind: inspector for inspector in discover()}
    if args.kind:
        if args.kind not in inspectors:
            raise UsageError(problem=f"unknown kind {args.kind!r}", where="--kind", fix="use one of: " + ", ".join(inspectors))
        inspector = inspectors[args.kind]
    else:
        found = identify(path)
        if found is None:
            raise UsageError(problem="not a file osbuilder can inspect", where=str(path),
                             fix="osbuilder inspects: " + ", ".join(f"{i.kind} ({i.description})" for i in discover()))
        inspector = found
    report = inspector.inspect(path, InspectOptions(root_hash_file=args.root_hash_file, verify=args.verify))
    text = list(report.text)
    for problem in report.problems:
        log.error("%s: %s", path, problem)
        text.append(f"  INVALID: {problem}")
    return Outcome(report.to_json(), "\n".join(text), exit_code=EXIT_FAILED if report.problems else 0)


COMMAND = Command("inspect", "decode a kernel, image or initrd: features, layout, pfn block, filesystem, verity, /init, agent",
                  configure, run, order=40)
