"""ttRPC client for the Kata agent protocol, plus the .proto files (``protos/``) and their generated
modules. Regenerate those with ``python -m osbuilder.ttrpc.regenerate``."""

from osbuilder.ttrpc.client import (
    AGENT_SERVICE,
    AGENT_VSOCK_PORT,
    HEALTH_SERVICE,
    MAX_MESSAGE_SIZE,
    Code,
    Frame,
    GuestDetails,
    TtrpcClient,
    TtrpcConnectionClosed,
    TtrpcError,
    TtrpcProtocolError,
    TtrpcStatusError,
    TtrpcTimeout,
    VersionInfo,
)

__all__ = [
    "AGENT_SERVICE",
    "AGENT_VSOCK_PORT",
    "HEALTH_SERVICE",
    "MAX_MESSAGE_SIZE",
    "Code",
    "Frame",
    "GuestDetails",
    "TtrpcClient",
    "TtrpcConnectionClosed",
    "TtrpcError",
    "TtrpcProtocolError",
    "TtrpcStatusError",
    "TtrpcTimeout",
    "VersionInfo",
]
