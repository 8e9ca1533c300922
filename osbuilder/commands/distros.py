"""osbuilder distros: the available distro recipes."""

from __future__ import annotations

import argparse

from osbuilder.commands import Command, Outcome
from osbuilder.context import Context


def configure(parser: argparse.ArgumentParser) -> None:
    del parser


def run(context: Context, args: argparse.Namespace) -> Outcome:
    recipes = [recipe.to_json() for recipe in context.recipes()]
    lines = [f"{'NAME':<10} {'RELEASES':<28} {'ARCHITECTURES':<18} INIT MODES"]
    for recipe in recipes:
        releases = ", ".join(
            f"{release['codename']}{'*' if release['codename'] == recipe['default_release'] else ''}"
            for release in recipe["releases"]
        )
        inits = ", ".join(
            f"{mode}{'*' if mode == recipe['default_init'] else ''}" for mode in recipe["init_modes"]
        )
        lines.append(f"{recipe['name']:<10} {releases:<28} {', '.join(recipe['architectures']):<18} {inits}")
    lines.append("(* = default)")
    return Outcome({"distros_dir": str(context.distros_dir), "distros": recipes}, "\n".join(lines))


COMMAND = Command("distros", "list the distro recipes: releases, architectures, init modes", configure, run,
                  order=11)
