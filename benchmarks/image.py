"""Image build time against `mkfs.ext4 -d` alone (target: at most 1.3x), plus erofs against
mkfs.erofs alone, the cost of --measured, and the size model's accuracy on a real tree.

    python benchmarks/image.py [ROOTFS_DIR] [--runs N]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import SOURCE_DATE_EPOCH, arguments, mib, realistic_tree, run, timed, tree_size

from osbuilder.image.builder import ImageOptions, ImageResult, build_image


def main() -> int:
    args = arguments(__doc__)
    tree = realistic_tree(args.rootfs)
    entries, data = tree_size(tree)
    print(f"tree: {tree}: {entries} entries, {mib(data)} of file data; median of {args.runs} runs\n")
    with tempfile.TemporaryDirectory(prefix="osbuilder-bench-", dir=os.environ.get("TMPDIR", "/var/tmp")) as work:
        out = Path(work)

        def ours(**options: object) -> ImageResult:
            return build_image(tree, ImageOptions(output=out / "kata.img", skip_rootfs_check=True,
                                                  source_date_epoch=SOURCE_DATE_EPOCH,
                                                  root_hash_file=out / "root_hash.txt", **options))  # type: ignore[arg-type]

        def clean() -> None:  # deleting the previous output is not part of a build
            for leftover in out.iterdir():
                if leftover.is_file():
                    leftover.unlink()

        ext4_time, result = timed(ours, args.runs, clean)
        assert isinstance(result, ImageResult)
        fs_blocks = result.layout.root.size // 4096

        def mkfs_alone() -> None:
            target = out / "baseline.ext4"
            run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-d", tree, target, str(fs_blocks)])

        baseline, _ = timed(mkfs_alone, args.runs, clean)
        cli_time, _ = timed(lambda: run([sys.executable, "-m", "osbuilder", "build-image", tree, "-o", out / "cli.img",
                                         "--skip-rootfs-check", "--source-date-epoch", str(SOURCE_DATE_EPOCH)],
                                        env={**os.environ, "OSBUILDER_NO_PROGRESS": "1"}), args.runs, clean)
        measured_time, _ = timed(lambda: ours(measured=True), args.runs, clean)
        steps = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
        print(f"ext4 image ({result.layout.size >> 20} MiB, filesystem {mib(result.layout.root.size)}):")
        print(f"  mkfs.ext4 -d alone, same size        {baseline:7.2f} s")
        print(f"  build_image() (library)              {ext4_time:7.2f} s   ratio {ext4_time / baseline:.2f}  ({steps})")
        print(f"  osbuilder build-image (process)      {cli_time:7.2f} s   ratio {cli_time / baseline:.2f}")
        print(f"  --measured (library)                 {measured_time:7.2f} s   ratio {measured_time / baseline:.2f}")

        tree_blocks = result.sizing["tree"]["blocks"]  # type: ignore[index]
        overhead = result.sizing["geometry"]["overhead_blocks"]  # type: ignore[index]
        used = result.filesystem.blocks - int(result.filesystem.details["free_blocks"])  # type: ignore[call-overload]
        minimum = int(result.sizing["minimum_fs_bytes"])  # type: ignore[call-overload]
        print("\nsize model on this tree:")
        print(f"  estimated use {mib((tree_blocks + overhead) * 4096)}, mke2fs used {mib(used * 4096)} "
              f"(estimate {100 * ((tree_blocks + overhead) / used - 1):+.2f} %)")
        print(f"  smallest filesystem that fits (with 3 % reserved): {mib(minimum)}; image "
              f"{result.layout.size >> 20} MiB after {result.sizing['reason']}")  # type: ignore[index]
        du = int(subprocess.run(["du", "-s", "-B1M", tree], capture_output=True, text=True).stdout.split()[0])
        print(f"  (Kata starts its probe loop from du -B1M = {du} MiB)")

        erofs_time, erofs_result = timed(lambda: ours(fs_type="erofs"), args.runs, clean)
        assert isinstance(erofs_result, ImageResult)

        def mkfs_erofs_alone() -> None:
            target = out / "baseline.erofs"
            run(["mkfs.erofs", "-zlz4hc", "-Enoinline_data", "--quiet", target, tree])

        erofs_baseline, _ = timed(mkfs_erofs_alone, args.runs, clean)
        print(f"\nerofs image ({erofs_result.layout.size >> 20} MiB):")
        print(f"  mkfs.erofs alone                     {erofs_baseline:7.2f} s")
        print(f"  build_image(fs_type=erofs)           {erofs_time:7.2f} s   ratio {erofs_time / erofs_baseline:.2f}  "
              f"(staging: {erofs_result.sizing.get('staged')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
