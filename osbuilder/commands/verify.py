"""osbuilder verify: derive every reference value again from a bundle's files and compare."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from osbuilder import options
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.errors import UsageError
from osbuilder.evidence.options import VERIFY

EPILOG = """\
Checked, in order: reference-values.json against SHA256SUMS; every measured image's dm-verity root
hash recomputed from its data partition, and its hash partition against the tree of that data; the
sha256 of the kernel, image and initrd files; the kernel command line each configuration produces
(osbuilder.kernelcmdline) and its kernel_verity_params; the agent version recorded in each
asset; then every file against SHA256SUMS. The first mismatch is named and the exit status is 1.

The provenance next to a bundle tarball (<bundle>.intoto.json, or the signed <bundle>.intoto.jsonl)
is checked too: its subjects must be the bundle's files; a signed one needs --public-key.

examples:
  osbuilder verify build/kata-static-4.1.0-amd64.tar.zst
  osbuilder verify /                                    # an installed /opt/kata
  osbuilder verify kata-static-4.1.0-amd64.tar.zst --public-key release.pub
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, metavar="BUNDLE",
                        help="a kata-static tarball, or a directory holding opt/kata (an extracted bundle, /)")


def _provenance_file(bundle: Path, given: Path | None) -> Path | None:
    if given is not None:
        if not given.is_file():
            raise UsageError(problem="no such file", where=f"--provenance {given}",
                             fix="give the .intoto.json(l) written next to the bundle")
        return given
    if bundle.is_file():
        from osbuilder.evidence.provenance import next_to

        return next_to(bundle)
    return None


def _provenance_problems(statement: dict[str, Any], kata: Path, tarball: Path | None, where: str) -> list[str]:
    from osbuilder.cache import sha256_file

    problems = []
    subjects = {subject["name"]: subject["digest"]["sha256"] for subject in statement.get("subject", [])}
    for name, digest in sorted(subjects.items()):
        if name.startswith("opt/kata/"):
            path = kata / name.removeprefix("opt/kata/")
            found = sha256_file(path) if path.is_file() else "missing"
        elif tarball is not None and name == tarball.name:
            found = sha256_file(tarball)
        else:
            continue
        if found != digest:
            problems.append(f"{name}: sha256 {found}, the provenance ({where}) has {digest}")
    from osbuilder.evidence.refvalues import read_sha256sums

    unlisted = sorted(f"opt/kata/{name}" for name in read_sha256sums(kata) if f"opt/kata/{name}" not in subjects)
    problems.extend(f"{name}: not a subject of the provenance ({where})" for name in unlisted)
    return problems


def run(context: Context, args: argparse.Namespace) -> Outcome:
    if not args.bundle.exists():
        raise UsageError(problem="no such file or directory", where=str(args.bundle),
                         fix="give a kata-static-*.tar.zst or a directory holding opt/kata")
    values = options.values(args, VERIFY)
    public_key = values["public_key"]
    if public_key is not None and not public_key.is_file():
        raise UsageError(problem="no such file", where=f"--public-key {public_key}", fix="give a PEM public key")
    provenance_file = _provenance_file(args.bundle, values["provenance"])
    from osbuilder.bundle.extract import extract_bundle
    from osbuilder.evidence import provenance, refvalues

    workdir = Path(tempfile.mkdtemp(prefix="osb-verify-"))
    try:
        root = args.bundle if args.bundle.is_dir() else extract_bundle(args.bundle.resolve(), workdir)
        kata = root / refvalues.KATA
        if not (kata / refvalues.SHA256SUMS).is_file():
            raise UsageError(problem=f"no {refvalues.KATA}/{refvalues.SHA256SUMS}", where=str(args.bundle),
                             fix="give a bundle made by osbuilder bundle")
        reference, mismatches = refvalues.verify_tree(kata)
        messages = [mismatch.message() for mismatch in mismatches]
        if provenance_file is not None:
            statement = provenance.open_statement(provenance_file, public_key)
            messages += _provenance_problems(statement, kata, args.bundle if args.bundle.is_file() else None,
                                             provenance_file.name)
        elif public_key is not None:
            raise UsageError(problem="--public-key given, but no provenance was found next to the bundle",
                             where=str(args.bundle), fix="pass --provenance FILE")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ok = not messages
    checked = {"measured": sorted(reference.get("measured", {})), "sha256": sorted(reference.get("sha256", {})),
               "configurations": sorted(reference.get("configurations", {}))}
    data = {"ok": ok, "bundle": str(args.bundle), "provenance": str(provenance_file) if provenance_file else None,
            "signed": provenance_file is not None and provenance_file.name.endswith(".jsonl"),
            "checked": checked,
            "mismatches": messages}
    if ok:
        text = (f"{args.bundle}: every reference value re-derived and equal ({len(checked['sha256'])} digests, "
                f"{len(checked['measured'])} dm-verity trees, {len(checked['configurations'])} command lines); "
                "SHA256SUMS matches"
                + (f"; provenance {provenance_file.name} matches" if provenance_file else ""))
    else:
        text = f"{args.bundle}: MISMATCH\n  {messages[0]}" + (
            f"\n  ({len(messages) - 1} more: --json lists them)" if len(messages) > 1 else "")
    return Outcome(data, text, exit_code=0 if ok else 1)


COMMAND = Command("verify", "re-derive a bundle's reference values (digests, dm-verity, command lines) and compare",
                  configure, run, order=75, epilog=EPILOG, options=(VERIFY,))
