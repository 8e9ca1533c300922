"""Bootstrappers: "bootstrap this package set" behind one interface (base.Bootstrapper).

Each module is one way to make a distribution's base tree and registers itself by the recipe's
`bootstrap.tool` and the backend it serves: `mmdebstrap` on this host, `mmdebstrap` in a builder
container (docker), and `none` for recipes without a distribution. Another tool (apk, dnf) is
another module, listed below; nothing else branches on the tool.
"""

from __future__ import annotations

from osbuilder.errors import UsageError
from osbuilder.modes import Backend
from osbuilder.rootfs.bootstrappers import docker, mmdebstrap, none
from osbuilder.rootfs.bootstrappers.base import Bootstrapper, Choice, Factory

REGISTRY: dict[tuple[str, Backend], Factory] = {**mmdebstrap.FACTORIES, **docker.FACTORIES, **none.FACTORIES}


def tools() -> list[str]:
    return sorted({tool for tool, _backend in REGISTRY})


def choose(choice: Choice, backend: Backend) -> Bootstrapper:
    """The bootstrapper for a recipe and a backend; planning only (no side effects)."""
    tool = choice.recipe.bootstrap.tool
    factory = REGISTRY.get((tool, backend))
    if factory is None:
        served = [str(other) for name, other in REGISTRY if name == tool]
        raise UsageError(
            problem=f"no {backend} bootstrapper for the tool '{tool}' of {choice.recipe.name}",
            where=f"{choice.recipe.where('bootstrap', 'tool')} (bootstrap.tool)",
            fix=f"use --backend {' or '.join(served)}" if served else f"use one of: {', '.join(tools())}")
    return factory(choice)
