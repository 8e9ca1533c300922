# osbuilder: Kata Containers guest assets, rootless and reproducible.
#   make          build the default kernel, rootfs, image and initrd, boot-check them, and run the example
#                 in an Ubuntu noble container inside the VM (as root: `make run` needs it)
#   make test     run the unit and the integration tests
# Every target sets itself up: the Debian packages it needs (installed when running as root) and a
# virtual environment with osbuilder in it.

SHELL := /bin/bash
.DEFAULT_GOAL := all

PYTHON ?= python3
VENV ?= .venv
OSB := $(VENV)/bin/osbuilder
PYTEST := $(VENV)/bin/pytest
BUILD_DIR ?= build

# The build steps' own knobs are not interpreted here. Kata's variables (DISTRO, OS_VERSION, ARCH,
# AGENT_INIT, EXTRA_PKGS, USE_DOCKER, AGENT, AGENT_TARBALL, AGENT_BIN, DOCKER_BASE, ROOTFS_DIR,
# FS_TYPE, ROOT_FREE_SPACE, IMAGE_SIZE_ALIGNMENT_MB, BLOCK_SIZE, MEASURED_ROOTFS, SKIP_DAX_HEADER,
# BUILD_VARIANT, SKIP_ROOTFS_CHECK, INITRD_COMPRESSION, KERNEL_MODULES_DIR) and osbuilder's own
# NO_BUDGETS (image, initrd and boot) are declared with the options they set in osbuilder's option
# tables (see `osbuilder build-image --help`); make puts the variables of its command line into the
# environment, where `osbuilder ... --make-variables` reads them. osbuilder also decides the
# defaults: the distribution (versions.yaml), the rootfs's name, and SOURCE_DATE_EPOCH (the
# checkout's commit time; the kernel's is its source's date).
ARCH ?= $(shell uname -m)
KERNEL_DIR ?= $(BUILD_DIR)/kernel
IMAGE ?= $(BUILD_DIR)/kata-containers.img
INITRD ?= $(BUILD_DIR)/kata-containers-initrd.img
# build-kernel options, e.g. KERNEL_FLAGS="--debug" or "--confidential" or "--ccache".
KERNEL_FLAGS ?=
# A release bundle: the runtime (RUNTIME=path of a kata-static tarball, directory or shim; default:
# versions.yaml assets.runtime) and, when it cannot be run here, RUNTIME_VERSION.
MEASURED_IMAGE ?= $(BUILD_DIR)/kata-containers-measured.img
RUNTIME ?=
RUNTIME_VERSION ?=
# osbuilder boot options, e.g. BOOT_FLAGS="--timeout 600 --console-log build/console.log".
BOOT_FLAGS ?=
# make run: the container's root (an Ubuntu noble container root, build-rootfs --container) and
# osbuilder run options, e.g. RUN_FLAGS="--shared-fs virtio-9p --console-log build/run-console.log".
CONTAINER_ROOTFS ?= $(BUILD_DIR)/container-rootfs
RUN_FLAGS ?=
OSB_FLAGS ?=
PYTEST_FLAGS ?=
MAKE_VARIABLES := --make-variables

STAMP_DEPS := $(VENV)/.deps-installed
STAMP_VENV := $(VENV)/.osbuilder-installed

.PHONY: all deps venv test test-unit test-integration test-cross binfmt test-fresh lint format rootfs image initrd kernel agent \
        measured-image bundle bundle-only boot run verify report clean distclean

# The default assets, boot-checked: kernel, image (systemd) and initrd (the agent is init); then the
# architecture's example in a container on them.
all: kernel image initrd boot run

# Debian packages: the union of what every step and the tests need (listed in osbuilder/hosttools.py).
deps: $(STAMP_DEPS)
$(STAMP_DEPS): osbuilder/hosttools.py
	@packages="$$($(PYTHON) osbuilder/hosttools.py --tests)"; \
	$(PYTHON) -c 'import ensurepip' 2>/dev/null || packages="$$packages python3-venv"; \
	missing=$$(for p in $$packages; do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:" $$missing; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "missing Debian packages (run as root, or: sudo apt-get install" $$missing")"; \
	  fi; \
	fi
	@mkdir -p $(VENV) && touch $@

venv: $(STAMP_VENV)
$(STAMP_VENV): pyproject.toml $(STAMP_DEPS)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,lint]'
	@touch $@

# `make test` runs every tier: unit, integration, and the arm64 tier (marker `cross`: the arm64
# kernel cross build, ~11 min cold on 2 cores; a Debian bookworm arm64 rootfs bootstrapped through
# qemu-user, root, rootless and with the docker backend; its image and initrd booted under
# qemu-system-aarch64 with TCG; a container run). `make test-cross` runs the arm64 tier alone. It
# needs qemu-user registered with binfmt_misc: as root, `make binfmt` (which both run first) mounts
# binfmt_misc where nothing has (no systemd) and enables Debian's qemu-aarch64 handler, so the tier
# does not depend on an earlier session having done it by hand; otherwise `osbuilder doctor` says how.
test: venv binfmt
	$(PYTEST) $(PYTEST_FLAGS) tests

test-unit: venv
	$(PYTEST) $(PYTEST_FLAGS) -m 'not integration and not cross' tests

test-integration: venv
	$(PYTEST) $(PYTEST_FLAGS) -m 'integration and not cross' tests

test-cross: venv binfmt
	$(PYTEST) $(PYTEST_FLAGS) -m cross tests

binfmt: venv
	@if [ "$$(id -u)" = 0 ] && [ "$$(uname -m)" = x86_64 ]; then \
	  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; \
	  grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || update-binfmts --enable qemu-aarch64; \
	fi

# The whole suite as CI runs it on a fresh machine (as root): first forget what earlier runs left
# (the test users and their homes, the project's docker images, osbuilder's containers), then test
# against an empty cache directory (removed afterwards). Both kernels are built again.
test-fresh: venv binfmt
	$(VENV)/bin/python -m tests.helpers.machine_state
	@cache=$$(mktemp -d /var/tmp/osbuilder-fresh-cache.XXXXXX); trap 'rm -rf "$$cache"' EXIT; \
	echo "empty cache directory: $$cache"; started=$$(date +%s); status=0; \
	env -u OSBUILDER_TEST_CACHE_DIR OSBUILDER_CACHE_DIR="$$cache" \
	  $(PYTEST) $(PYTEST_FLAGS) tests || status=$$?; \
	echo "test-fresh: $$(( $$(date +%s) - started )) s wall time, exit status $$status"; exit $$status

lint: venv
	$(VENV)/bin/ruff check osbuilder tests benchmarks
	$(VENV)/bin/mypy osbuilder
	$(VENV)/bin/actionlint -no-color .github/workflows/*.yml
	$(VENV)/bin/zizmor --offline --persona auditor .github/workflows

format: venv
	$(VENV)/bin/ruff check --fix osbuilder tests benchmarks

# The rootfs, the image and the initrd, from the variables of the command line (ROOTFS_DIR, FS_TYPE,
# ...); without ROOTFS_DIR, build-image and build-initrd build their rootfs first.
image: venv
	@mkdir -p $(dir $(IMAGE))
	$(OSB) build-image $(MAKE_VARIABLES) $(OSB_FLAGS) -o "$(IMAGE)"

initrd: venv
	@mkdir -p $(dir $(INITRD))
	$(OSB) build-initrd $(MAKE_VARIABLES) $(OSB_FLAGS) -o "$(INITRD)"

# The guest kernel (Debian's linux-source, kernel-configs/ fragments) into $(KERNEL_DIR).
kernel: venv
	$(OSB) $(OSB_FLAGS) build-kernel --arch $(ARCH) -o $(KERNEL_DIR) $(KERNEL_FLAGS)

# make rootfs [DISTRO=ubuntu] [OS_VERSION=noble] [AGENT_INIT=yes|no] [EXTRA_PKGS="a b"] [USE_DOCKER=true] ...
# Output: $(BUILD_DIR)/rootfs-<distro>-<release>-<systemd|agent> (replaced on every run; osbuilder names it).
rootfs: venv
	@mkdir -p $(BUILD_DIR)
	$(OSB) build-rootfs $(MAKE_VARIABLES) --build-dir "$(BUILD_DIR)" --force $(OSB_FLAGS)

# The reference agent (static, musl) into $(BUILD_DIR)/kata-agent.
agent: venv
	@mkdir -p $(BUILD_DIR)
	$(OSB) build-agent $(OSB_FLAGS) -o $(BUILD_DIR)/kata-agent

# Boot-check the image and the initrd with the kernel, as the runtime would (QEMU; TCG unless KVM works).
boot: venv
	$(OSB) boot $(MAKE_VARIABLES) $(OSB_FLAGS) --kernel $(KERNEL_DIR)/vmlinux.container --image $(IMAGE) \
	  $(BOOT_FLAGS)
	$(OSB) boot $(OSB_FLAGS) --kernel $(KERNEL_DIR)/vmlinux.container --initrd $(INITRD) $(BOOT_FLAGS)

# The architecture's example: `sh` from an Ubuntu noble container, run inside a VM booted from the
# kernel and the image, the way the Kata runtime runs it (osbuilder run). Needs root: the sandbox's
# host side mounts the container's root into the shared directory and starts virtiofsd.
run: venv
	@[ "$$(id -u)" = 0 ] || { echo "make run needs root: osbuilder run mounts the container's root into the" \
	  "sandbox's shared directory and starts virtiofsd (sudo make run)" >&2; exit 2; }
	@mkdir -p $(dir $(CONTAINER_ROOTFS))
	$(OSB) build-rootfs $(OSB_FLAGS) --distro ubuntu --os-version noble --container --force -o "$(CONTAINER_ROOTFS)"
	$(OSB) run $(MAKE_VARIABLES) $(OSB_FLAGS) --kernel $(KERNEL_DIR)/vmlinux.container --image $(IMAGE) \
	  --rootfs "$(CONTAINER_ROOTFS)" $(RUN_FLAGS) -- sh -c 'echo hello from the container; cat /etc/os-release'

# The measured variant of the image (dm-verity), with its root hash next to it.
measured-image: venv
	$(MAKE) image IMAGE=$(MEASURED_IMAGE) MEASURED_ROOTFS=yes BUILD_VARIANT=measured

# The kata-static release tarball from the assets, then boot-checked with its own configuration.
bundle: kernel image initrd measured-image bundle-only
	$(OSB) boot $(OSB_FLAGS) --bundle $(BUILD_DIR)/kata-static-*.tar.zst $(BOOT_FLAGS)

# Only the tarball, from assets already in BUILD_DIR (a CI job that gathered them); SIGN_KEY=key.pem
# signs its provenance.
bundle-only: venv
	$(OSB) bundle $(MAKE_VARIABLES) $(OSB_FLAGS) --arch $(ARCH) --kernel-dir $(KERNEL_DIR) --image $(IMAGE) --initrd $(INITRD) \
	  --measured-image $(MEASURED_IMAGE) --measured-root-hash $(dir $(MEASURED_IMAGE))root_hash_measured.txt \
	  $(if $(RUNTIME),--runtime $(RUNTIME)) $(if $(RUNTIME_VERSION),--runtime-version $(RUNTIME_VERSION)) \
	  -o $(BUILD_DIR)

# Re-derive the bundle's reference values (digests, dm-verity, command lines) and check its provenance
# (PUBLIC_KEY=key.pub: a signed one).
verify: venv
	$(OSB) verify $(MAKE_VARIABLES) $(OSB_FLAGS) $(BUILD_DIR)/kata-static-*.tar.zst

# One HTML page about the bundle (sizes against budgets, boot timeline, inputs, SBOM packages).
report: venv
	$(OSB) report $(OSB_FLAGS) $(BUILD_DIR)/kata-static-*.tar.zst -o $(BUILD_DIR)/report.html --boot

clean:
	rm -rf $(BUILD_DIR)

distclean: clean
	rm -rf $(VENV)
