"""The option tables of the release evidence (osbuilder.options): the budgets switch shared by the
build steps and the boot check, the bundle's provenance signing key, and what verify checks it with."""

from __future__ import annotations

from osbuilder.options import Kind, Option, Table

BUDGETS = Table("budgets", (
    Option("no_budgets", ("--no-budgets",), "do not check the size and boot-time budgets of versions.yaml",
           make="NO_BUDGETS", kind=Kind.FLAG, default=False),
))

SIGNING = Table("provenance", (
    Option("sign_key", ("--sign-key",), "sign the provenance (a DSSE envelope, <bundle>.intoto.jsonl) with this "
           "private key; verify with osbuilder verify BUNDLE --public-key KEY.pub", make="SIGN_KEY", kind=Kind.PATH,
           metavar="PEM"),
))

VERIFY = Table("provenance", (
    Option("provenance", ("--provenance",), "the provenance to check (default: <bundle>.intoto.jsonl or "
           ".intoto.json next to it)", kind=Kind.PATH, metavar="FILE"),
    Option("public_key", ("--public-key",), "verify the provenance's DSSE signature with this public key",
           make="PUBLIC_KEY", kind=Kind.PATH, metavar="PEM"),
))
