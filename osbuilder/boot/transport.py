"""Choosing the agent channel: vsock in production, a virtio-serial port where vsock is missing.

`--transport auto` asks a probe. The default probe needs both halves of a host vsock: the
vhost-vsock device QEMU opens (read and write) and an AF_VSOCK socket for the client; a probe is
injectable so that both answers can be tested on any host.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

VHOST_VSOCK = "/dev/vhost-vsock"
TRANSPORTS = ("auto", "vsock", "serial")


def vsock_usable() -> bool:
    if not os.access(VHOST_VSOCK, os.R_OK | os.W_OK):
        return False
    try:
        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
    except (AttributeError, OSError):
        return False
    return True


def choose_transport(requested: str, probe: Callable[[], bool] = vsock_usable) -> str:
    """"vsock" or "serial" for --transport auto|vsock|serial."""
    if requested != "auto":
        return requested
    return "vsock" if probe() else "serial"
