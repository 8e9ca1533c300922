"""The docker backend: the same mmdebstrap run inside a builder container, through the Docker SDK.

The builder image comes from templates/rootfs/Dockerfile.j2 on top of a configurable base image
(default `<distro>:<release>`); it is tagged by the digest of the rendered Dockerfile, so it is built
once. The run bind-mounts the build's staging directory (the tarball and the used packages come
out there), a snapshot of the package cache and the keyring (read-only); it uses the host network,
the capabilities mmdebstrap's root mode needs to mount /proc and /sys in the chroot, and hands its
outputs to the calling user before it exits. The container is removed whatever happens, Ctrl-C and
SIGTERM included.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from osbuilder import templating
from osbuilder.errors import BuildError, CommandError, UsageError

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

BUILDER_PACKAGES = ("mmdebstrap", "mount", "distro-info-data")  # distro-info-data: default mirrors
BUILDER_REPOSITORY = "osbuilder-rootfs-builder"
MOUNT_ROOT = "/osbuilder"
CAPABILITIES = ["SYS_ADMIN", "SYS_CHROOT", "MKNOD"]
PASSED_ENVIRONMENT = ("SOURCE_DATE_EPOCH", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY",
                      "HTTPS_PROXY", "NO_PROXY")


@dataclass(frozen=True)
class Mount:
    host: str
    container: str
    read_only: bool = False


@dataclass(frozen=True)
class Builder:
    tag: str
    image_id: str


def client() -> docker.DockerClient:
    # The Docker SDK (and requests under it) is imported only by docker builds.
    import docker

    try:
        engine = docker.from_env(timeout=600)
        engine.ping()
    except docker.errors.DockerException as exc:
        raise UsageError(
            problem=f"no Docker engine answers: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            where="--backend docker",
            fix="start the engine (as root: scripts/start-dockerd) or use --backend native",
        ) from exc
    return engine


def default_base(distro: str, release: str) -> str:
    return f"{distro}:{release}"


def builder_image(engine: docker.DockerClient, distro: str, release: str, base_image: str) -> Builder:
    import docker.errors

    dockerfile = templating.render("rootfs/Dockerfile.j2", base_image=base_image, distro=distro, release=release,
                                   packages=BUILDER_PACKAGES)
    try:
        base_id = str(engine.images.get(base_image).id)
    except docker.errors.ImageNotFound:
        base_id = "absent"
        log.info("base image %s is not present; the engine will try to pull it", base_image)
    # The tag names the Dockerfile and the base image's content: a re-imported base gets a new builder.
    digest = hashlib.sha256(f"{dockerfile}\n{base_id}".encode()).hexdigest()[:12]
    tag = f"{BUILDER_REPOSITORY}:{distro}-{release}-{digest}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        return Builder(tag, engine.images.get(tag).id)
    log.info("building the builder image %s from %s", tag, base_image)
    try:
        image, _logs = engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, network_mode="host",
                                           rm=True, forcerm=True, pull=False)
    except docker.errors.BuildError as exc:
        tail = "\n".join(str(chunk.get("stream") or chunk.get("error") or "").rstrip()
                         for chunk in list(exc.build_log)[-15:] if isinstance(chunk, dict))
        raise BuildError(problem=f"building the builder image from {base_image} failed: {exc.msg}",
                         where=f"--docker-base {base_image}",
                         fix="check the base image (it must be a Debian-like image with apt) and the network;\n"
                             f"  last lines of the build:\n{tail}") from exc
    except docker.errors.APIError as exc:
        missing = "not found" in str(exc).lower() or "pull access denied" in str(exc).lower()
        raise UsageError(
            problem=f"the base image {base_image} is not available: {exc.explanation or exc}",
            where=f"--docker-base {base_image}",
            fix=("make one locally, e.g. `mmdebstrap --variant=apt --include=mmdebstrap,mount,distro-info-data "
                 f"{release} - | docker import - {base_image}`, or pass --docker-base IMAGE")
            if missing else "check the Docker engine",
        ) from exc
    return Builder(tag, str(image.id))


def run(engine: docker.DockerClient, builder: Builder, argv: Sequence[str], mounts: Sequence[Mount], *,
        owned_outputs: Sequence[str], on_line: Callable[[str], None]) -> None:
    """Run argv in a fresh container; chown owned_outputs to the caller before exiting."""
    import docker.errors

    owner = f"{os.getuid()}:{os.getgid()}"
    chown = " ".join(f'"{path}"' for path in owned_outputs)
    script = f'"$@"; status=$?; chown -R {owner} {chown} 2>/dev/null; exit $status'
    environment = {name: os.environ[name] for name in PASSED_ENVIRONMENT if name in os.environ}
    volumes: dict[str, dict[str, Any]] = {
        mount.host: {"bind": mount.container, "mode": "ro" if mount.read_only else "rw"} for mount in mounts}
    container = engine.containers.create(
        builder.tag, ["sh", "-c", script, "sh", *argv], network_mode="host", cap_add=CAPABILITIES,
        security_opt=["apparmor=unconfined"], volumes=volumes, environment=environment,
        labels={"org.osbuilder.role": "rootfs-build"}, detach=True)
    tail: deque[str] = deque(maxlen=25)
    try:
        container.start()
        pending = ""
        for chunk in container.logs(stream=True, follow=True):
            pending += chunk.decode(errors="replace")
            *lines, pending = pending.split("\n")
            for line in lines:
                tail.append(line)
                on_line(line)
        status = int(container.wait().get("StatusCode", 1))
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)
    if status != 0:
        raise CommandError(
            problem=f"mmdebstrap in the builder container failed with exit status {status}",
            where=f"docker run {builder.tag} {' '.join(argv)}",
            fix="see the output above; the same command runs natively with --backend native",
            argv=list(argv), returncode=status, stderr_tail="\n".join(tail),
        )
