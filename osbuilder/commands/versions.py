"""osbuilder versions [KEY]: the pinned inputs from versions.yaml."""

from __future__ import annotations

import argparse
import json

import yaml

from osbuilder.commands import Command, Outcome
from osbuilder.context import Context


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", nargs="?", default="", metavar="KEY",
                        help="dotted path of one entry, e.g. assets.kernel (default: everything)")


def run(context: Context, args: argparse.Namespace) -> Outcome:
    versions = context.versions
    value = versions.lookup(args.key)
    data = {"file": str(versions.path), "key": args.key or None, "value": value}
    if isinstance(value, dict | list):
        text = yaml.safe_dump(value, sort_keys=False, default_flow_style=False, width=110).rstrip()
    else:
        text = json.dumps(value) if not isinstance(value, str) else value
    return Outcome(data, text)


COMMAND = Command("versions", "show the pinned inputs from versions.yaml", configure, run, order=10)
