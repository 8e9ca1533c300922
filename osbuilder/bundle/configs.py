"""Runtime configuration files rendered from our jinja2 templates.

Each configuration points at one kernel and exactly one of image or initrd (the runtime refuses
both). The root device parameters are not written into kernel_params: the runtime derives them from
the image, rootfs_type, disable_image_nvdimm and kernel_verity_params, as `osbuilder boot --config`
does with the same code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from osbuilder import __version__, templating
from osbuilder.arch import Arch

TEMPLATES = Path(__file__).resolve().parent / "templates"
DATA_FILES = ("bundle/templates",)
PREFIX = "/opt/kata"
ASSETS_DIR = f"{PREFIX}/share/kata-containers"
TEMPLATE_OF = {"qemu": "configuration-qemu.toml.j2", "clh": "configuration-clh.toml.j2",
               "fc": "configuration-fc.toml.j2"}


@dataclass(frozen=True)
class ConfigSpec:
    filename: str  # configuration-qemu.toml, configuration-qemu-initrd.toml, ...
    hypervisor: str  # qemu | clh | fc
    kernel: str  # file name in ASSETS_DIR
    image: str | None = None
    initrd: str | None = None
    rootfs_type: str = "ext4"
    verity_line: str = ""
    description: str = ""
    kernel_params: str = ""

    @property
    def nvdimm(self) -> bool:
        return self.hypervisor == "qemu" and self.image is not None


def _toml_string(value: object) -> str:
    # JSON string escaping is valid TOML basic-string escaping for everything we emit.
    return json.dumps(str(value), ensure_ascii=False)


def render(spec: ConfigSpec, arch: Arch) -> str:
    if (spec.image is None) == (spec.initrd is None):
        raise ValueError(f"{spec.filename}: exactly one of image and initrd")
    return templating.render(
        TEMPLATES, TEMPLATE_OF[spec.hypervisor], (("toml", _toml_string),),
        osbuilder_version=__version__,
        asset_description=spec.description,
        prefix=PREFIX,
        qemu_arch=arch.qemu,
        machine_type="q35" if arch.name == "x86_64" else "virt",
        kernel=f"{ASSETS_DIR}/{spec.kernel}",
        image=f"{ASSETS_DIR}/{spec.image}" if spec.image else None,
        initrd=f"{ASSETS_DIR}/{spec.initrd}" if spec.initrd else None,
        rootfs_type=spec.rootfs_type,
        kernel_params=spec.kernel_params,
        disable_image_nvdimm=not spec.nvdimm,
        kernel_verity_params=spec.verity_line,
    )
