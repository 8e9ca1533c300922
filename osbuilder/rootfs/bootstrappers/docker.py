"""mmdebstrap in a builder container: the docker backend of Debian-style recipes, through the Docker SDK.

The builder image comes from templates/Dockerfile.j2 on top of a configurable base image (default
`<distro>:<release>`); it is tagged by the digest of the rendered Dockerfile and the base image's
id, so it is built once, and that tag is what the rootfs cache key records. The run bind-mounts the
build's staging directory (the tarball and the used packages come out there), a snapshot of the
package cache and the keyring (read-only); it uses the host network, the capabilities mmdebstrap's
root mode needs to mount /proc and /sys in the chroot, and hands its outputs to the calling user
before it exits. The container is removed whatever happens, Ctrl-C and SIGTERM included; a build
killed outright cannot remove it, so every container carries its osbuilder's pid and the next
docker build removes those whose osbuilder is gone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osbuilder import staging, templating
from osbuilder.binfmt import require_emulation
from osbuilder.cache import Cache
from osbuilder.errors import BuildError, CommandError, UsageError
from osbuilder.fetch import Fetcher
from osbuilder.modes import Backend, BuildMode
from osbuilder.rootfs.bootstrappers.archive_index import explained_index_failures, require_architecture_index
from osbuilder.rootfs.bootstrappers.base import Bootstrapped, Bootstrapper, Choice, Factory, Job, Workspace
from osbuilder.rootfs.bootstrappers.keyring import resolve_keyring
from osbuilder.rootfs.bootstrappers.mmdebstrap import (
    TOOL,
    Paths,
    finish_tree,
    mmdebstrap_argv,
    spec_of,
    with_package_cache,
)
from osbuilder.rootfs.tree import RootfsTree
from osbuilder.versions import Versions

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
DATA_FILES = ("rootfs/templates/Dockerfile.j2",)
BUILDER_PACKAGES = ("mmdebstrap", "mount", "distro-info-data", "arch-test")  # distro-info-data: default mirrors;
# arch-test: mmdebstrap refuses a foreign --arch without it
BUILDER_REPOSITORY = "osbuilder-rootfs-builder"
MOUNT_ROOT = "/osbuilder"
CAPABILITIES = ["SYS_ADMIN", "SYS_CHROOT", "MKNOD"]
PASSED_ENVIRONMENT = ("SOURCE_DATE_EPOCH", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY",
                      "HTTPS_PROXY", "NO_PROXY")
ROLE_LABEL = "org.osbuilder.role"
PID_LABEL = "org.osbuilder.pid"
BOOT_LABEL = "org.osbuilder.boot-id"


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


def dockerfile(distro: str, release: str, base_image: str) -> str:
    return templating.render(TEMPLATES, "Dockerfile.j2", base_image=base_image, distro=distro, release=release,
                             packages=BUILDER_PACKAGES)


def builder_tag(engine: docker.DockerClient, distro: str, release: str, base_image: str) -> str:
    """The builder image's tag: it names the Dockerfile and the base image's content, so a
    re-imported base gets a new builder (and a new cache key)."""
    import docker.errors

    try:
        base_id = str(engine.images.get(base_image).id)
    except docker.errors.ImageNotFound:
        base_id = "absent"
        log.info("base image %s is not present; the engine will try to pull it", base_image)
    digest = hashlib.sha256(f"{dockerfile(distro, release, base_image)}\n{base_id}".encode()).hexdigest()[:12]
    return f"{BUILDER_REPOSITORY}:{distro}-{release}-{digest}"


def builder_image(engine: docker.DockerClient, distro: str, release: str, base_image: str, tag: str) -> Builder:
    import docker.errors

    with contextlib.suppress(docker.errors.ImageNotFound):
        return Builder(tag, engine.images.get(tag).id)
    log.info("building the builder image %s from %s", tag, base_image)
    try:
        image, _logs = engine.images.build(fileobj=io.BytesIO(dockerfile(distro, release, base_image).encode()), tag=tag, network_mode="host",
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
            fix=(f"make one locally, e.g. `mmdebstrap --variant=apt --include={','.join(BUILDER_PACKAGES)} "
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
        labels={ROLE_LABEL: "rootfs-build", PID_LABEL: str(os.getpid()), BOOT_LABEL: _boot_id()}, detach=True)
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


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def remove_orphans(engine: docker.DockerClient) -> list[str]:
    """Remove the build containers of osbuilder processes of this boot that are gone (killed)."""
    import docker.errors

    removed = []
    for container in engine.containers.list(all=True, filters={"label": f"{ROLE_LABEL}=rootfs-build"}):
        labels = container.labels or {}
        pid = labels.get(PID_LABEL, "")
        if labels.get(BOOT_LABEL) != _boot_id() or not pid.isdigit() or staging.alive(int(pid)):
            continue
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)
            removed.append(container.name)
            log.info("removed build container %s, left by osbuilder process %s, which is gone", container.name, pid)
    return removed


@dataclass(frozen=True)
class InContainer:
    """mmdebstrap (root mode) in a builder container made from the base image."""

    distro: str
    release: str
    base_image: str
    tag: str
    keyring: Path | None = None  # resolved by prepare()
    image_id: str | None = None  # the builder image, made (or found) by prepare()

    @property
    def mode(self) -> BuildMode:
        return BuildMode.DOCKER

    @property
    def identity(self) -> str:
        return f"docker:{self.tag}"

    def check_host(self, job: Job, where: str) -> None:
        # The engine was asked while planning; a foreign --arch runs through the host's binfmt handler.
        require_emulation(job.arch, where, in_container=True)

    def prepare(self, job: Job, versions: Versions, cache: Cache, fetcher: Fetcher) -> Bootstrapper:
        keyring = resolve_keyring(job.recipe, job.arch, versions, cache, fetcher)
        require_architecture_index(job, keyring, fetcher)
        engine = client()
        remove_orphans(engine)
        builder = builder_image(engine, self.distro, self.release, self.base_image, self.tag)
        return dataclasses.replace(self, keyring=keyring, image_id=builder.image_id)

    def can_write_in_place(self, directory: Path) -> bool:
        return False  # the container writes a tarball; provisioning edits it as tar members

    def bootstrap(self, job: Job, workspace: Workspace) -> Bootstrapped:
        assert self.image_id is not None, "prepare() first"
        engine = client()
        root = MOUNT_ROOT
        # The staging directory is the container's /osbuilder/out: the tarball and the used packages
        # are written there, by root in the container, and handed to the caller at its end.
        out = workspace.staging

        def run_in_container(debs_in: Path, debs_out: Path) -> None:
            paths = Paths(f"{root}/out/{workspace.target.relative_to(out)}", f"{root}/debs-in",
                          f"{root}/out/{debs_out.relative_to(out)}", f"{root}/keyring.gpg" if self.keyring else None)
            mounts = [Mount(str(out), f"{root}/out"), Mount(str(debs_in), f"{root}/debs-in", read_only=True)]
            if self.keyring:
                mounts.append(Mount(str(self.keyring), f"{root}/keyring.gpg", read_only=True))
            argv = mmdebstrap_argv(spec_of(job), BuildMode.ROOT, paths, "tar")
            run(engine, Builder(self.tag, self.image_id or ""), argv, mounts, owned_outputs=[f"{root}/out"],
                on_line=workspace.on_line)

        with explained_index_failures(job):
            return with_package_cache(job, workspace, False, run_in_container)

    def finish(self, tree: RootfsTree) -> None:
        finish_tree(tree)


def default_base(distro: str, release: str) -> str:
    return f"{distro}:{release}"


def _choose(choice: Choice) -> Bootstrapper:
    base = choice.docker_base or default_base(choice.recipe.name, choice.release.codename)
    tag = builder_tag(client(), choice.recipe.name, choice.release.codename, base)
    return InContainer(choice.recipe.name, choice.release.codename, base, tag)


FACTORIES: dict[tuple[str, Backend], Factory] = {(TOOL, Backend.DOCKER): _choose}
