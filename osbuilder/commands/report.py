"""osbuilder report: one self-contained HTML page about a release bundle."""

from __future__ import annotations

import argparse
from pathlib import Path

from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.errors import UsageError
from osbuilder.outputs import check_output_path

EPILOG = """\
The page has four sections: sizes (each asset against its budget; the image's largest packages and
directories), the boot timeline of each asset, the inputs and their pins, and the SBOM's packages
with a search box. It needs no network.

examples:
  osbuilder report build/kata-static-4.1.0-amd64.tar.zst -o build/report.html --boot
  osbuilder boot --bundle B --json > boots.json; osbuilder report B --boot-json boots.json -o report.html
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, metavar="BUNDLE",
                        help="a kata-static tarball, or a directory holding opt/kata")
    parser.add_argument("-o", "--output", type=Path, default=Path("report.html"), metavar="HTML",
                        help="the page to write (default: report.html)")
    boots = parser.add_mutually_exclusive_group()
    boots.add_argument("--boot", action="store_true", help="run the boot check of every configuration for the timeline")
    boots.add_argument("--boot-json", type=Path, action="append", default=[], metavar="FILE",
                       help="osbuilder boot --json results to draw (repeatable)")
    parser.add_argument("--provenance", type=Path, metavar="FILE",
                        help="the provenance to list the inputs from (default: the one next to the tarball)")


def run(context: Context, args: argparse.Namespace) -> Outcome:
    if not args.bundle.exists():
        raise UsageError(problem="no such file or directory", where=str(args.bundle),
                         fix="give a kata-static-*.tar.zst or a directory holding opt/kata")
    output = check_output_path(args.output)
    from osbuilder.evidence import report
    from osbuilder.evidence.provenance import next_to

    boots = report.boots_from(args.boot_json)
    provenance = args.provenance
    if provenance is None and args.bundle.is_file():
        provenance = next_to(args.bundle)
    if args.boot:
        boots = report.run_boot_checks(args.bundle)
    data = report.write_report(args.bundle, output, boots=boots, versions=context.versions, provenance_file=provenance)
    text = (f"{output}: {len(data.assets)} assets, {len(data.boots)} boots, {len(data.inputs)} inputs, "
            f"{len(data.packages)} packages")
    return Outcome({"ok": True, "report": str(output), "assets": data.assets, "boots": data.boots,
                    "inputs": len(data.inputs), "packages": len(data.packages)}, text)


COMMAND = Command("report", "write one self-contained HTML page about a bundle: sizes, boot timeline, inputs, SBOM",
                  configure, run, order=76, epilog=EPILOG)
