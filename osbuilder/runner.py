"""The one place that runs external commands.

Every command is logged before it runs; on failure the exact, copy-pasteable command line is logged
and a CommandError carries the argv, the exit status and the tail of the output. Children run in
their own session so an interrupted build can kill the whole process group, and can be tied to our
lifetime (PR_SET_PDEATHSIG) so that even a SIGKILLed osbuilder leaves no QEMU behind.

`contained=True` goes further, for steps with many processes or with mounts (mmdebstrap): the
command runs under a small supervisor (`python -m osbuilder.runner --contain`, this module) that is
the subreaper of everything the command starts and kills all of it when the command ends or when
osbuilder dies, however it dies (PR_SET_PDEATHSIG reaches the supervisor, which outlives a SIGKILL of
osbuilder for as long as it needs). As root the command also gets a private mount namespace
(`private_mount_namespace`), so what it mounts is never visible on the host and disappears with its
last process.

`MountNamespace` is the same private mount namespace for a step that mounts and starts processes
in it over time rather than in one command (`osbuilder run`: binds, virtiofsd, QEMU): a holder
process keeps it and dies with osbuilder, and commands are run or spawned inside it with nsenter.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from osbuilder.errors import BuildError, CommandError, UsageError
from osbuilder.hosttools import find_tool, package_for

log = logging.getLogger(__name__)

TAIL_LINES = 25
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
CONTAIN_FLAG = "--contain"
CONTAIN_GRACE = 4.0  # seconds a contained command gets to stop after SIGTERM (terminate() waits 5)


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


def private_mount_namespace(args: Sequence[str], step: str = "run a step in a mount namespace of its own"
                            ) -> tuple[str, ...]:
    """argv in a mount namespace of its own (root only) whose mounts propagate nowhere: what it
    mounts is never seen on the host and goes away with the namespace's last process. unshare execs
    the command (no --fork), so the command is the process its caller started."""
    unshare = require_tool("unshare", step)
    return (unshare, "--mount", "--propagation", "private", "--", *args)


def contain(args: Sequence[str]) -> tuple[str, ...]:
    """argv under the supervisor (see the module's docstring), in a private mount namespace as root."""
    inner = private_mount_namespace(args) if os.geteuid() == 0 else tuple(args)
    return (sys.executable, "-m", "osbuilder.runner", CONTAIN_FLAG, str(os.getpid()), "--", *inner)


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
    contained: bool = False,
    what: str = "",
    on_line: Callable[[str], None] | None = None,
) -> Completed:
    """Run argv. `env` adds to (not replaces) the environment.

    capture: keep stdout/stderr and return them. stream: pass output through to stderr as it
    comes (still keeping a tail for the error). `what` is a short description used in errors.
    `on_line` is called for each output line when streaming (progress parsing). `contained`: the
    command's whole process tree (and, as root, its mounts) dies with it and with osbuilder.
    """
    args = tuple(os.fspath(arg) for arg in argv)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    shown = format_argv(args, env)
    log.debug("run: %s%s", shown, f" (in {os.fspath(cwd)})" if cwd else "")
    preexec = _die_with_parent if die_with_parent else None
    if contained:
        require_tool(args[0], what)
    try:
        process = subprocess.Popen(
            contain(args) if contained else args,
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


FIRST_PASSED_FD = 3  # the first descriptor a spawned child gets from pass_fds (after stdin, stdout, stderr)


def _hand_over(fds: Sequence[int]) -> None:
    """In the child, before exec: `fds` become 3, 4, ... in order (inheritable), and every other
    inheritable descriptor above them is closed (close-on-exec ones close at exec; subprocess's
    error pipe is one of those and must stay open until then). The sources are first moved above
    every target, so that a source that is itself a target is not overwritten early."""
    end = FIRST_PASSED_FD + len(fds)
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, end) for fd in fds]
    for number, fd in enumerate(moved, FIRST_PASSED_FD):
        os.dup2(fd, number)
        os.close(fd)
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # listdir's own descriptor is gone by now
            if int(name) >= end and not fcntl.fcntl(int(name), fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                os.close(int(name))


def _child_setup(die_with_parent: bool, pass_fds: Sequence[int]) -> Callable[[], None] | None:
    if not die_with_parent and not pass_fds:
        return None

    def setup() -> None:
        if pass_fds:
            _hand_over(pass_fds)
        if die_with_parent:
            _die_with_parent()

    return setup


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[bytes] | None = subprocess.DEVNULL,
    stderr: int | IO[bytes] | None = subprocess.DEVNULL,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    die_with_parent: bool = True,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start a long-running child (QEMU, dockerd). The caller must `terminate()` it in a finally.

    pass_fds: open descriptors the child gets as 3, 4, ... in this order (as the Kata runtime hands
    virtiofsd its listening socket as fd 3: Go's ExtraFiles); the child inherits no other."""
    args = tuple(os.fspath(arg) for arg in argv)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    passed = "".join(f" {number}<&{fd}" for number, fd in enumerate(pass_fds, FIRST_PASSED_FD))
    log.debug("spawn: %s%s", format_argv(args, env), passed)
    try:
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=_child_setup(die_with_parent, tuple(pass_fds)),
            # Popen's own pass_fds keeps descriptors at their numbers, and its close_fds runs after
            # preexec_fn: it would close ours. _hand_over closes the others itself.
            close_fds=not pass_fds,
        )
    except FileNotFoundError:
        require_tool(args[0])
        raise


NAMESPACE_START_SECONDS = 10.0


class MountNamespace:
    """A private mount namespace (root only) that lives until `close()` or osbuilder's death, for a
    step that mounts and starts processes in it over time. Use as a context manager.

    A holder (`unshare --mount --propagation private -- sleep infinity`, spawned to die with
    osbuilder) keeps the namespace; `run` and `spawn` start commands in it through nsenter (spawned
    ones die with osbuilder as well), and osbuilder reaches a path inside through `host_path`. When
    the holder and the last process inside are gone, so are the namespace and everything mounted in
    it: nothing of it ever shows on the host."""

    def __init__(self, step: str) -> None:
        self.step = step  # what it is for, in error messages: "run a container"
        self._holder: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._holder is None:
            raise RuntimeError("the mount namespace is not started")
        return self._holder.pid

    @property
    def enter(self) -> tuple[str, ...]:
        """The argv prefix that runs a command in the namespace (e.g. QEMU's, through VmSpec.wrapper)."""
        return (require_tool("nsenter", self.step), f"--mount=/proc/{self.pid}/ns/mnt", "--")

    def host_path(self, path: Path) -> Path:
        """The path by which osbuilder, outside the namespace, reaches `path` inside it."""
        return Path(f"/proc/{self.pid}/root") / path.relative_to("/")

    def start(self) -> MountNamespace:
        if os.geteuid() != 0:
            raise UsageError(problem="a private mount namespace needs root", where=self.step,
                             fix="run it as root (sudo)")
        sleep = require_tool("sleep")
        self._holder = spawn(private_mount_namespace([sleep, "infinity"], self.step), stderr=subprocess.PIPE,
                             die_with_parent=True)
        self._wait_for_exec(os.path.realpath(sleep))
        return self

    def _wait_for_exec(self, sleep: str) -> None:
        """Until unshare has set the namespace up and exec'd sleep: entering it earlier could mount
        before its propagation is private."""
        assert self._holder is not None
        deadline = time.monotonic() + NAMESPACE_START_SECONDS
        while time.monotonic() < deadline:
            if self._holder.poll() is not None:
                error = self._holder.stderr.read().decode(errors="replace") if self._holder.stderr else ""
                raise BuildError(problem=f"could not create a private mount namespace: {error.strip()}",
                                 where="unshare --mount", fix="this needs root and a kernel with mount namespaces")
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{self._holder.pid}/exe") == sleep:
                    return
            time.sleep(0.005)
        raise BuildError(problem="the mount namespace holder did not start", where="unshare --mount",
                         fix="see whether the host is overloaded")

    def run(self, argv: Sequence[str | os.PathLike[str]], *, what: str) -> Completed:
        return run([*self.enter, *argv], what=what)

    def spawn(self, argv: Sequence[str | os.PathLike[str]], **options: Any) -> subprocess.Popen[bytes]:
        """`spawn` (with its options) of a command in the namespace."""
        return spawn([*self.enter, *argv], **options)

    def close(self) -> None:
        """End the holder; the namespace goes with the last process in it (stop those first)."""
        if self._holder is not None:
            terminate(self._holder, grace=2)
            if self._holder.stderr is not None:
                self._holder.stderr.close()

    def __enter__(self) -> MountNamespace:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


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


# --- the supervisor of contained commands (python -m osbuilder.runner --contain PARENT -- ARGV) ---------


def _descendants(root: int) -> list[int]:
    """Every live process below `root`, from /proc (the supervisor is their subreaper, so orphans
    stay below it)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, pending = [], [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _kill_tree(sig: int) -> None:
    for pid in _descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _supervise(parent: int, argv: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    stopping: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        if not stopping:
            stopping.append(signum)
            _kill_tree(signal.SIGTERM)
            signal.setitimer(signal.ITIMER_REAL, CONTAIN_GRACE)

    def force(_signum: int, _frame: object) -> None:
        _kill_tree(signal.SIGKILL)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    signal.signal(signal.SIGALRM, force)
    # osbuilder's death, however it dies, reaches us as SIGTERM; it may have died already.
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        return 128 + signal.SIGTERM
    child = os.fork()
    if child == 0:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):
            signal.signal(signum, signal.SIG_DFL)
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    status = 1
    while True:
        try:
            pid, code = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == child:
            status = os.waitstatus_to_exitcode(code)
            status = 128 - status if status < 0 else status
            _kill_tree(signal.SIGKILL)  # what the command left running dies with it
    return 128 + stopping[0] if stopping and status == 0 else status


if __name__ == "__main__":
    if len(sys.argv) > 4 and sys.argv[1] == CONTAIN_FLAG and sys.argv[3] == "--":
        sys.exit(_supervise(int(sys.argv[2]), sys.argv[4:]))
    sys.stderr.write(f"usage: python -m osbuilder.runner {CONTAIN_FLAG} PARENT_PID -- COMMAND [ARG...]\n")
    sys.exit(2)
