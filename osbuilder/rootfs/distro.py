"""Which distribution, release, architecture and init mode a rootfs request means, and its default
name. The one place these defaults are decided, for build-rootfs, for build-image and build-initrd
building their rootfs first, and for `make rootfs`:

- without --distro, versions.yaml pins the distribution, release and init mode of the asset
  (assets.image for a rootfs or an image, assets.initrd for an initrd), per architecture;
- with --distro, the recipe's default release and default init mode;
- --agent-init makes the agent init whatever the default; a container root has no init at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from osbuilder.arch import Arch, host_arch, parse_arch
from osbuilder.errors import UsageError
from osbuilder.modes import InitMode
from osbuilder.recipes import InitPackages, Recipe, Release
from osbuilder.versions import Versions

CONTAINER = "container"  # the default name's last part for a container root


@dataclass(frozen=True)
class Selection:
    recipe: Recipe
    release: Release
    arch: Arch
    init: InitPackages | None  # None: a container root (no init, no agent)

    @property
    def default_name(self) -> str:
        """rootfs-<distro>-<release>-<systemd|agent|container>"""
        last = self.init.name if self.init is not None else CONTAINER
        return f"rootfs-{self.recipe.name}-{self.release.codename}-{last}"


def select(versions: Versions, recipe_named: Callable[[str], Recipe], *, distro: str | None, release: str | None,
           arch: str | None, agent_init: bool, container: bool = False, asset: str = "image") -> Selection:
    target = parse_arch(arch) if arch else host_arch()
    pin = versions.distro_pin(asset, target.name) if distro is None else None
    recipe = recipe_named(pin.distro if pin is not None else str(distro))
    chosen = recipe.release(release or (pin.release if pin is not None else None))
    if target.name not in chosen.architectures:
        raise UsageError(problem=f"{recipe.name} {chosen.codename} is not available for {target.name}",
                         where="--arch", fix=f"architectures of {chosen.codename}: {', '.join(chosen.architectures)}")
    if container:
        return Selection(recipe, chosen, target, None)
    mode = InitMode.AGENT if agent_init else (pin.init if pin is not None else recipe.default_init)
    return Selection(recipe, chosen, target, recipe.init(mode))
