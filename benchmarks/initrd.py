"""Initrd build time and size against Kata's `find . | cpio -o -H newc | gzip -9` (target with the
default compression: at most 0.2x the time at no more than 1.0x the size), and every codec's size,
build time and decompression time.

    python benchmarks/initrd.py [ROOTFS_DIR] [--runs N] [--codecs zstd,gzip,...]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SOURCE_DATE_EPOCH, arguments, mib, realistic_tree, run, timed, tree_size

from osbuilder.initrd.builder import InitrdOptions, InitrdResult, build_initrd
from osbuilder.initrd.compression import CODECS, DEFAULT


def decompress_time(path: Path, argv: list[str], runs: int) -> float:
    def once() -> None:
        with path.open("rb") as source:
            subprocess.run(argv, stdin=source, stdout=subprocess.DEVNULL, check=True)

    return timed(once, runs)[0]


def main() -> int:
    args = arguments(__doc__, lambda parser: parser.add_argument(
        "--codecs", default=",".join(CODECS), help="codecs to compare (default: all)"))
    tree = realistic_tree(args.rootfs)
    entries, data = tree_size(tree)
    print(f"tree: {tree}: {entries} entries, {mib(data)} of file data\n")
    with tempfile.TemporaryDirectory(prefix="osbuilder-bench-", dir=os.environ.get("TMPDIR", "/var/tmp")) as work:
        out = Path(work)
        baseline_file = out / "kata.img"
        started = time.perf_counter()
        with baseline_file.open("wb") as handle:
            subprocess.run("find . | cpio -o -H newc --quiet | gzip -9", shell=True, cwd=tree, stdout=handle,
                           check=True)
        baseline = time.perf_counter() - started
        baseline_size = baseline_file.stat().st_size
        print(f"Kata: find . | cpio -o -H newc | gzip -9   {baseline:7.2f} s   {mib(baseline_size)}  (1 run)")

        def ours(codec: str, level: int | None = None) -> InitrdResult:
            return build_initrd(tree, InitrdOptions(output=out / f"initrd.{codec}", compression=codec, level=level,
                                                    skip_rootfs_check=True, source_date_epoch=SOURCE_DATE_EPOCH))

        default_time, default_result = timed(lambda: ours(DEFAULT), args.runs)
        assert isinstance(default_result, InitrdResult)
        cli_time, _ = timed(lambda: run([sys.executable, "-m", "osbuilder", "build-initrd", tree, "-o",
                                         out / "cli.img", "--skip-rootfs-check", "--source-date-epoch",
                                         str(SOURCE_DATE_EPOCH)], env={**os.environ, "OSBUILDER_NO_PROGRESS": "1"}),
                            args.runs)
        print(f"osbuilder default ({DEFAULT} -{default_result.level}), library  {default_time:7.2f} s   "
              f"{mib(default_result.size)}   time {default_time / baseline:.3f}x, size "
              f"{default_result.size / baseline_size:.3f}x")
        print(f"osbuilder build-initrd (process)          {cli_time:7.2f} s                time {cli_time / baseline:.3f}x")
        cpio_only, plain = timed(lambda: ours("none"), args.runs)
        assert isinstance(plain, InitrdResult)
        print(f"cpio alone (no compression), library      {cpio_only:7.2f} s   {mib(plain.size)}\n")

        print(f"{'codec':<14} {'build':>8} {'size':>11} {'vs gzip-9':>9} {'decompress':>11}  (kernel option)")
        gzip_decompress = decompress_time(baseline_file, ["gzip", "-dc"], args.runs)
        print(f"{'kata gzip -9':<14} {baseline:7.2f}s {mib(baseline_size):>11} {1:9.3f} {gzip_decompress:10.2f}s")
        for name in args.codecs.split(","):
            codec = CODECS[name]
            levels = [codec.default_level] + ([3, 9, 19] if name == "zstd" else [])
            for level in levels:
                runs = args.runs if name in ("zstd", "lz4", "none") and level < 19 else 1
                build_time, result = timed(lambda n=name, lv=level: ours(n, lv), runs)  # type: ignore[misc]
                assert isinstance(result, InitrdResult)
                decompress = decompress_time(result.path, codec.decompress_argv(), args.runs)
                label = f"{name} -{level}" if name != "none" else "none"
                print(f"{label:<14} {build_time:7.2f}s {mib(result.size):>11} {result.size / baseline_size:9.3f} "
                      f"{decompress:10.2f}s  ({codec.kernel_option})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
