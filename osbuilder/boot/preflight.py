"""The launcher checks its inputs before it starts anything.

A kernel that is not a kernel, an image without Kata's layout, or an initrd that is neither a cpio
archive nor a compressed one would only make QEMU or the guest fail later with a message about
something else. Each is bad input (exit 2), named with what the file really is, found from its
first bytes by the same decoders `osbuilder inspect` uses.
"""

from __future__ import annotations

import os
from pathlib import Path

from osbuilder.errors import UsageError

HEAD_SIZE = 64 * 1024
CPIO_MAGICS = (b"070701", b"070702", b"070707")


def _head(path: Path, option: str, length: int = HEAD_SIZE) -> tuple[bytes, int]:
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            return handle.read(length), size
    except IsADirectoryError as exc:
        raise UsageError(problem=f"{path} is a directory, not a file", where=f"{option} {path}",
                         fix="give the path of a built asset") from exc
    except FileNotFoundError as exc:
        raise UsageError(problem=f"{path} does not exist", where=f"{option} {path}",
                         fix="give the path of a built asset") from exc
    except OSError as exc:
        raise UsageError(problem=f"cannot read {path}: {exc.strerror}", where=f"{option} {path}",
                         fix="check the path and its permissions") from exc


def what_is(head: bytes, size: int) -> str:
    """A short description of a file from its first bytes, for error messages."""
    if size == 0:
        return "an empty file"
    from osbuilder.inspectors import discover

    for inspector in discover():
        if inspector.detect(head, size):
            return f"a file `osbuilder inspect` reads as {inspector.kind!r} ({inspector.description})"
    if head.startswith(b"\x7fELF"):
        return "an ELF program or library, not a kernel"
    sample = head[:4096]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(char.isprintable() or char in "\n\r\t" for char in text):
        first = text.strip().splitlines()[0] if text.strip() else ""
        shown = first if len(first) <= 60 else first[:57] + "..."
        return f"a text file ({size} bytes, starting {shown!r})"
    return f"binary data of {size} bytes that no asset decoder recognises"


def check_kernel(path: Path, option: str = "--kernel") -> str | None:
    """The kernel's architecture, once it is known to be a kernel."""
    from osbuilder.kernel.inspect import detect_kernel, kernel_arch

    head, size = _head(path, option)
    if not detect_kernel(head, size):
        raise UsageError(problem=f"{path} is not a guest kernel: it is {what_is(head, size)}",
                         where=f"{option} {path}",
                         fix="give a vmlinux (ELF) or bzImage, e.g. from osbuilder build-kernel")
    return kernel_arch(head)


def check_image(path: Path, option: str = "--image") -> None:
    from osbuilder.image.layout import HEAD_SIZE as IMAGE_HEAD
    from osbuilder.image.layout import decode

    head, size = _head(path, option, max(IMAGE_HEAD, HEAD_SIZE))
    layout, problems, _raw = decode(head, size)
    if layout is not None and not problems:
        return
    reasons = "; ".join(problems) or "no Kata partition table"
    raise UsageError(problem=f"{path} is not a Kata rootfs image ({reasons}): it is {what_is(head, size)}",
                     where=f"{option} {path}",
                     fix="give an image made by osbuilder build-image (osbuilder inspect IMAGE says what is wrong)")


def check_initrd(path: Path, option: str = "--initrd") -> None:
    from osbuilder.initrd.compression import detect

    head, size = _head(path, option)
    if head.startswith(CPIO_MAGICS) or detect(head) is not None:
        return
    raise UsageError(problem=f"{path} is not an initrd (neither a cpio archive nor a compressed one): it is "
                             f"{what_is(head, size)}",
                     where=f"{option} {path}", fix="give an initrd made by osbuilder build-initrd")


def check_assets(kernel: Path, image: Path | None, initrd: Path | None, *, kernel_option: str = "--kernel",
                 image_option: str = "--image", initrd_option: str = "--initrd") -> str | None:
    """Each asset is what it claims to be; returns the kernel's architecture."""
    arch = check_kernel(kernel, kernel_option)
    if image is not None:
        check_image(image, image_option)
    if initrd is not None:
        check_initrd(initrd, initrd_option)
    return arch
