"""osbuilder cache list|prune|push|pull: what the cache holds (kinds, sizes, last use), pruning it, and
moving entries to and from the remote cache by key."""

from __future__ import annotations

import argparse
import time

from osbuilder import cachetool
from osbuilder.commands import Command, Outcome
from osbuilder.context import Context
from osbuilder.errors import UsageError

EPILOG = """\
prune removes the least recently used entries first: every entry unused for more than DAYS
(--older-than), then more until the cache is at most SIZE (--max-size: bytes, or 500M, 20G, 1.5TiB).
An entry that a build is reading or writing is never removed (it is skipped and reported), and what
is kept still serves cache hits.

push and pull move entries by key (what a build's --json reports as cache_key, or KIND/KEY) between
this cache and --remote-cache, whatever --remote-cache-mode says; a failure is an error (exit 1).
push skips an entry the remote has; pull verifies everything before the entry appears here.

examples:
  osbuilder cache list
  osbuilder cache prune --max-size 20G
  osbuilder cache prune --older-than 30 --json
  osbuilder --remote-cache oci://ghcr.io/owner/osbuilder-cache cache push 3f9a...e1 kernel/77c0...9b
  osbuilder --remote-cache oci://ghcr.io/owner/osbuilder-cache cache pull 3f9a...e1
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "prune", "push", "pull"),
                        help="list the entries, prune them, or push/pull entries to/from --remote-cache")
    parser.add_argument("keys", nargs="*", metavar="KEY", help="push, pull: the entries' keys (or KIND/KEY)")
    parser.add_argument("--max-size", metavar="SIZE", help="prune: remove least recently used entries until the "
                                                           "cache is at most SIZE")
    parser.add_argument("--older-than", type=float, metavar="DAYS", help="prune: remove entries unused for longer")


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _ago(moment: float) -> str:
    days = (time.time() - moment) / cachetool.DAY
    return "today" if days < 1 else f"{days:.0f} days ago"


def run(context: Context, args: argparse.Namespace) -> Outcome:
    cache = context.cache
    if args.action in ("push", "pull"):
        return _transfer(context, args.action, args.keys)
    if args.keys:
        raise UsageError(problem=f"{args.action} takes no keys", where=f"cache {args.action} {args.keys[0]}",
                         fix="keys are for cache push and cache pull")
    if args.action == "list":
        if args.max_size is not None or args.older_than is not None:
            raise UsageError(problem="--max-size and --older-than are for prune", where="cache list",
                             fix="osbuilder cache prune --max-size SIZE")
        found = cachetool.entries(cache)
        totals = cachetool.summary(found, cache)
        lines = [f"{cache.root}: {_size(totals['total_bytes'])}"]
        for kind, figures in sorted(totals["kinds"].items()):
            lines.append(f"  {kind:<14} {figures['entries']:>5} entries  {_size(figures['bytes']):>10}")
        lines.append("")
        lines += [f"  {entry.kind:<14} {entry.key[:24]:<24} {_size(entry.size):>10}  used {_ago(entry.last_used)}"
                  f"{'' if entry.prunable else '  (not pruned)'}"
                  for entry in sorted(found, key=lambda entry: entry.last_used)]
        return Outcome({"ok": True, **totals, "entries": [entry.to_json() for entry in found]}, "\n".join(lines))
    if args.max_size is None and args.older_than is None:
        raise UsageError(problem="prune needs a limit", where="cache prune",
                         fix="give --max-size SIZE, --older-than DAYS, or both")
    if args.older_than is not None and args.older_than < 0:
        raise UsageError(problem="a negative age", where=f"--older-than {args.older_than}", fix="give days, e.g. 30")
    max_size = cachetool.parse_size(args.max_size) if args.max_size is not None else None
    pruned = cachetool.prune(cache, max_size=max_size, older_than_days=args.older_than)
    data = pruned.to_json(cache)
    lines = [f"removed {len(pruned.removed)} entries ({_size(data['removed_bytes'])}); the cache is now "
             f"{_size(data['total_bytes'])}"]
    lines += [f"  removed {entry.kind} {entry.key[:24]} ({_size(entry.size)})" for entry in pruned.removed]
    lines += [f"  in use, kept: {entry.kind} {entry.key[:24]} ({_size(entry.size)})" for entry in pruned.in_use]
    return Outcome(data, "\n".join(lines))


def _transfer(context: Context, action: str, keys: list[str]) -> Outcome:
    from osbuilder.remote import transfer  # oras, only when a registry is used

    if not keys:
        raise UsageError(problem=f"cache {action} needs the keys of the entries", where=f"cache {action}",
                         fix=f"osbuilder --remote-cache oci://HOST/REPO cache {action} KEY... (cache_key in a build's "
                             "--json, or KIND/KEY from `osbuilder cache list`)")
    if context.remote is None:
        raise UsageError(problem=f"cache {action} needs a remote cache", where=f"cache {action}",
                         fix="give --remote-cache oci://HOST[:PORT]/REPO (or set OSBUILDER_REMOTE_CACHE)")
    moved = (transfer.push if action == "push" else transfer.pull)(context.cache, context.remote, keys)
    lines = [f"{item['kind']} {item['key']}: {item['result']}" for item in moved]
    return Outcome({"ok": True, "action": action, "entries": moved}, "\n".join(lines))


COMMAND = Command("cache", "list the cache's entries (kind, size, last use), prune it least recently used first, "
                           "or push/pull entries to/from the remote cache",
                  configure, run, order=85, epilog=EPILOG)
