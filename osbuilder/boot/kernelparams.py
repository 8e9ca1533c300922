"""The guest kernel command line for boots: the rules live in osbuilder.kernelcmdline, shared with
the image layout; these names stay importable from here for the boot package's callers."""

from osbuilder.kernelcmdline import (
    RootSpec,
    kernel_params,
    parse_verity,
    root_params,
    serial_console,
    split_params,
)

__all__ = ["RootSpec", "kernel_params", "parse_verity", "root_params", "serial_console", "split_params"]
