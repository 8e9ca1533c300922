# ruff: noqa
# mypy: ignore-errors
# Generated from the .proto file of the same name; regenerate with
# `python -m osbuilder.ttrpc.regenerate` instead of editing.
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GuestDetailsRequest(_message.Message):
    __slots__ = ("mem_block_size", "mem_hotplug_probe")
    MEM_BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    MEM_HOTPLUG_PROBE_FIELD_NUMBER: _ClassVar[int]
    mem_block_size: bool
    mem_hotplug_probe: bool
    def __init__(self, mem_block_size: _Optional[bool] = ..., mem_hotplug_probe: _Optional[bool] = ...) -> None: ...

class AgentDetails(_message.Message):
    __slots__ = ("version", "init_daemon", "device_handlers", "storage_handlers", "supports_seccomp", "extra_features")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INIT_DAEMON_FIELD_NUMBER: _ClassVar[int]
    DEVICE_HANDLERS_FIELD_NUMBER: _ClassVar[int]
    STORAGE_HANDLERS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_SECCOMP_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FEATURES_FIELD_NUMBER: _ClassVar[int]
    version: str
    init_daemon: bool
    device_handlers: _containers.RepeatedScalarFieldContainer[str]
    storage_handlers: _containers.RepeatedScalarFieldContainer[str]
    supports_seccomp: bool
    extra_features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[str] = ..., init_daemon: _Optional[bool] = ..., device_handlers: _Optional[_Iterable[str]] = ..., storage_handlers: _Optional[_Iterable[str]] = ..., supports_seccomp: _Optional[bool] = ..., extra_features: _Optional[_Iterable[str]] = ...) -> None: ...

class GuestDetailsResponse(_message.Message):
    __slots__ = ("mem_block_size_bytes", "agent_details", "support_mem_hotplug_probe")
    MEM_BLOCK_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    AGENT_DETAILS_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_MEM_HOTPLUG_PROBE_FIELD_NUMBER: _ClassVar[int]
    mem_block_size_bytes: int
    agent_details: AgentDetails
    support_mem_hotplug_probe: bool
    def __init__(self, mem_block_size_bytes: _Optional[int] = ..., agent_details: _Optional[_Union[AgentDetails, _Mapping]] = ..., support_mem_hotplug_probe: _Optional[bool] = ...) -> None: ...

class DestroySandboxRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
