"""The one place that runs external commands.

Every command is logged before it runs; on failure the exact, copy-pasteable command line is logged
and a CommandError carries the argv, the exit status and the tail of the output. Children run in
their own session so an interrupted build can kill the whole process group, and can be tied to our
lifetime (PR_SET_PDEATHSIG) so that even a SIGKILLed osbuilder leaves no QEMU behind.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from osbuilder.errors import CommandError, UsageError
from osbuilder.hosttools import find_tool, package_for

log = logging.getLogger(__name__)

TAIL_LINES = 25
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def format_argv(argv: Sequence[str | os.PathLike[str]], env: Mapping[str, str] | None = None) -> str:
    prefix = " ".join(f"{key}={shlex.quote(value)}" for key, value in sorted((env or {}).items()))
    command = shlex.join(os.fspath(arg) for arg in argv)
    return f"{prefix} {command}" if prefix else command


def require_tool(name: str, step: str = "") -> str:
    """Absolute path of a host tool, or a UsageError naming the Debian package that provides it."""
    found = find_tool(name)
    if found:
        return found
    package = package_for(name)
    purpose = f" (needed to {step})" if step else ""
    fix = f"install it: apt-get install {package}" if package else f"install {name} and put it on PATH"
    raise UsageError(problem=f"host tool '{name}' not found{purpose}", where=name, fix=fix)


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may already have died between fork and prctl.
    if os.getppid() == 1:
        os._exit(1)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    capture: bool = True,
    stream: bool = False,
    check: bool = True,
    timeout: float | None = None,
    die_with_parent: bool = False,
    what: str = "",
    on_line: Callable[[str], None] | None = None,
) -> Completed:
    """Run argv. `env` adds to (not replaces) the environment.

    capture: keep stdout/stderr and return them. stream: pass output through to stderr as it
    comes (still keeping a tail for the error). `what` is a short description used in errors.
    `on_line` is called for each output line when streaming (progress parsing).
    """
    args = tuple(os.fspath(arg) for arg in argv)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    shown = format_argv(args, env)
    log.debug("run: %s%s", shown, f" (in {os.fspath(cwd)})" if cwd else "")
    preexec = _die_with_parent if die_with_parent else None
    try:
        process = subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if (capture or stream) else None,
            stderr=subprocess.PIPE if (capture or stream) else None,
            start_new_session=True,
            preexec_fn=preexec,
        )
    except FileNotFoundError:
        require_tool(args[0], what)
        raise
    except PermissionError as exc:
        raise CommandError(problem=f"cannot execute {args[0]}: {exc}", where=args[0], argv=args) from exc
    try:
        if stream:
            stdout, stderr = _stream(process, input, timeout, on_line)
        else:
            out_bytes, err_bytes = process.communicate(input=input, timeout=timeout)
            stdout = (out_bytes or b"").decode(errors="replace")
            stderr = (err_bytes or b"").decode(errors="replace")
    except subprocess.TimeoutExpired as exc:
        terminate(process)
        log.error("command timed out after %ss: %s", timeout, shown)
        raise CommandError(
            problem=f"{what or args[0]} did not finish within {timeout} s",
            where=shown,
            fix="increase the timeout or look at the command's output",
            argv=args,
        ) from exc
    except BaseException:
        terminate(process)
        raise
    if check and process.returncode != 0:
        tail = output_tail(stderr if stderr.strip() else stdout)
        log.error("command failed with exit status %s: %s", process.returncode, shown)
        raise CommandError(
            problem=f"{what or args[0]} failed with exit status {process.returncode}",
            where=shown,
            fix="see the output above; run the command by hand to debug",
            argv=args,
            returncode=process.returncode,
            stderr_tail=tail,
        )
    return Completed(args, process.returncode, stdout, stderr)


def output_tail(text: str) -> str:
    """The last lines of a command's output, as errors show them."""
    return "\n".join(text.rstrip().splitlines()[-TAIL_LINES:])


def _stream(
    process: subprocess.Popen[bytes],
    input: bytes | None,
    timeout: float | None,
    on_line: Callable[[str], None] | None,
) -> tuple[str, str]:
    """Pass both output streams through to our stderr, keeping a bounded tail of each."""
    tails: dict[str, collections.deque[str]] = {
        "stdout": collections.deque(maxlen=400),
        "stderr": collections.deque(maxlen=400),
    }
    quiet = on_line is not None

    def pump(name: str, pipe: IO[bytes]) -> None:
        for raw in iter(pipe.readline, b""):
            line = raw.decode(errors="replace")
            tails[name].append(line)
            if on_line is not None:
                on_line(line.rstrip("\n"))
            if not quiet:
                sys.stderr.write(line)
        pipe.close()

    threads = []
    for name, pipe in (("stdout", process.stdout), ("stderr", process.stderr)):
        assert pipe is not None
        thread = threading.Thread(target=pump, args=(name, pipe), daemon=True)
        thread.start()
        threads.append(thread)
    if input is not None and process.stdin is not None:
        process.stdin.write(input)
        process.stdin.close()
    process.wait(timeout=timeout)
    for thread in threads:
        thread.join()
    return "".join(tails["stdout"]), "".join(tails["stderr"])


def terminate(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Stop a child and everything it started (it leads its own session)."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    stderr: int | IO[bytes] | None = subprocess.DEVNULL,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    die_with_parent: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a long-running child (QEMU, dockerd). The caller must `terminate()` it in a finally."""
    args = tuple(os.fspath(arg) for arg in argv)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    log.debug("spawn: %s", format_argv(args, env))
    try:
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    except FileNotFoundError:
        require_tool(args[0])
        raise


TOOL_VERSIONS = "tool-versions.json"  # the memo of `tool --version` answers, in the cache directory


def tool_version(name: str, memo: Path | None = None, step: str = "") -> str:
    """First line of `NAME --version`. With `memo` (a JSON file, e.g. in the cache) the answer is
    kept per binary, identified by its path, size, mtime and inode: a Perl tool such as mmdebstrap
    takes a noticeable part of a cached build just to print its version."""
    path = require_tool(name, step)
    info = os.stat(path)
    real = os.path.realpath(path)
    identity = f"{real}:{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"
    known: dict[str, str] = {}
    if memo is not None:
        with contextlib.suppress(OSError, ValueError):
            known = json.loads(memo.read_text())
        if not isinstance(known, dict):
            known = {}
        if isinstance(known.get(identity), str):
            return known[identity]
    output = run([path, "--version"], what=f"{name} --version").stdout.strip()
    version = output.splitlines()[0].strip() if output else ""
    if memo is not None:
        known = {key: value for key, value in known.items() if not key.startswith(f"{real}:")}
        known[identity] = version
        temporary = memo.with_name(f".{memo.name}.{os.getpid()}")
        with contextlib.suppress(OSError):
            temporary.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n")
            os.replace(temporary, memo)
    return version
