"""A small static agent for tests: any static ELF executable will do, as nothing runs it here.

Compiled from a few lines of C with musl-gcc (as the reference agent is), else gcc -static; with
neither, the host's static busybox stands in.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = """\
#include <stdio.h>
#include <unistd.h>
int main(void) {
    printf("osbuilder test agent (pid %d)\\n", (int)getpid());
    return 0;
}
"""


def build_test_agent(directory: Path, name: str = "kata-agent") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / "agent.c"
    source.write_text(SOURCE)
    binary = directory / name
    for compiler in ("musl-gcc", "gcc"):
        if shutil.which(compiler) is None:
            continue
        result = subprocess.run([compiler, "-static", "-O2", "-g", "-o", str(binary), str(source)],
                                capture_output=True)
        if result.returncode == 0:
            return binary
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("no musl-gcc, gcc or busybox to make a test agent")
    shutil.copyfile(busybox, binary)
    binary.chmod(0o755)
    return binary
