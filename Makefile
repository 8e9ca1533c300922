# osbuilder: Kata Containers guest assets, rootless and reproducible.
#   make          build the default kernel, rootfs, image and initrd, and boot-check them
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

# Kata-style knobs (same names as Kata's osbuilder Makefile and scripts).
ARCH ?= $(shell uname -m)
DISTRO ?=
OS_VERSION ?=
AGENT_INIT ?= no
EXTRA_PKGS ?=
USE_DOCKER ?=
AGENT ?=
AGENT_TARBALL ?=
DOCKER_BASE ?=
FS_TYPE ?= ext4
ROOT_FREE_SPACE ?= 0
IMAGE_SIZE_ALIGNMENT_MB ?= 128
MEASURED_ROOTFS ?= no
SKIP_DAX_HEADER ?= no
# The rootfs `make image` and `make initrd` read. Empty: they build it first from DISTRO/OS_VERSION
# (default: versions.yaml assets.image / assets.initrd); `make rootfs` makes one you can pass here.
ROOTFS_DIR ?=
KERNEL_DIR ?= $(BUILD_DIR)/kernel
IMAGE ?= $(BUILD_DIR)/kata-containers.img
INITRD ?= $(BUILD_DIR)/kata-containers-initrd.img
BLOCK_SIZE ?= 4096
BUILD_VARIANT ?=
SKIP_ROOTFS_CHECK ?= no
INITRD_COMPRESSION ?=
# build-kernel options, e.g. KERNEL_FLAGS="--debug" or "--confidential" or "--ccache".
KERNEL_FLAGS ?=
# A release bundle: the runtime (RUNTIME=path of a kata-static tarball, directory or shim; default:
# versions.yaml assets.runtime) and, when it cannot be run here, RUNTIME_VERSION.
MEASURED_IMAGE ?= $(BUILD_DIR)/kata-containers-measured.img
RUNTIME ?=
RUNTIME_VERSION ?=
# Reproducible by default: every timestamp is clamped to the checkout's commit time. The kernel is the
# exception unless SOURCE_DATE_EPOCH is given: its build date is its source's (the tree's Makefile), so
# a new osbuilder commit does not invalidate a cached kernel built from the same inputs. The tests set
# their own epochs, and their kernels stay cache hits across commits for the same reason.
ifeq ($(origin SOURCE_DATE_EPOCH),undefined)
SOURCE_DATE_EPOCH := $(shell git log -1 --format=%ct 2>/dev/null)
DEFAULT_EPOCH_UNSET := env -u SOURCE_DATE_EPOCH
endif
ifneq ($(SOURCE_DATE_EPOCH),)
export SOURCE_DATE_EPOCH
endif
# osbuilder boot options, e.g. BOOT_FLAGS="--timeout 600 --console-log build/console.log".
BOOT_FLAGS ?=
OSB_FLAGS ?=
PYTEST_FLAGS ?=

STAMP_DEPS := $(VENV)/.deps-installed
STAMP_VENV := $(VENV)/.osbuilder-installed

.PHONY: all deps venv test test-unit test-integration test-cross lint format rootfs image initrd kernel agent \
        measured-image bundle bundle-only boot verify report clean distclean

# The default assets, boot-checked: kernel, image (systemd) and initrd (the agent is init).
all: kernel image initrd boot

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

# Cross-architecture kernel builds (arm64 on x86_64: ~15 min cold on 2 cores) are not part of
# `make test`; `make test-cross` runs them.
test: venv
	$(DEFAULT_EPOCH_UNSET) $(PYTEST) $(PYTEST_FLAGS) -m 'not cross' tests

test-unit: venv
	$(DEFAULT_EPOCH_UNSET) $(PYTEST) $(PYTEST_FLAGS) -m 'not integration and not cross' tests

test-integration: venv
	$(DEFAULT_EPOCH_UNSET) $(PYTEST) $(PYTEST_FLAGS) -m 'integration and not cross' tests

test-cross: venv
	$(DEFAULT_EPOCH_UNSET) $(PYTEST) $(PYTEST_FLAGS) -m cross tests

lint: venv
	$(VENV)/bin/ruff check osbuilder tests benchmarks
	$(VENV)/bin/mypy osbuilder

format: venv
	$(VENV)/bin/ruff check --fix osbuilder tests benchmarks

yes = $(filter yes true 1,$(1))

# Without ROOTFS_DIR, build-image and build-initrd build the rootfs first with these options.
ROOTFS_COMMON_FLAGS = $(if $(strip $(EXTRA_PKGS)),--extra-pkgs $(EXTRA_PKGS)) \
	$(if $(call yes,$(USE_DOCKER)),--backend docker) \
	$(if $(DOCKER_BASE),--docker-base $(DOCKER_BASE)) \
	$(if $(AGENT),--agent $(AGENT)) \
	$(if $(AGENT_TARBALL),--agent-tarball $(AGENT_TARBALL))
ROOTFS_FLAGS = --arch $(ARCH) $(if $(DISTRO),--distro $(DISTRO)) $(if $(OS_VERSION),--os-version $(OS_VERSION)) \
	$(ROOTFS_COMMON_FLAGS)
ROOTFS_SOURCE = $(if $(ROOTFS_DIR),"$(ROOTFS_DIR)",$(strip $(ROOTFS_FLAGS)))

# Kata's image_builder.sh variables map onto build-image's options.
image: venv
	@mkdir -p $(dir $(IMAGE))
	$(OSB) build-image $(OSB_FLAGS) $(ROOTFS_SOURCE) -o "$(IMAGE)" --fs-type $(FS_TYPE) \
	  --root-free-space $(ROOT_FREE_SPACE) --alignment-mb $(IMAGE_SIZE_ALIGNMENT_MB) --block-size $(BLOCK_SIZE) \
	  $(if $(call yes,$(MEASURED_ROOTFS)),--measured) $(if $(call yes,$(SKIP_DAX_HEADER)),--no-dax-header) \
	  $(if $(call yes,$(AGENT_INIT)),--agent-init) $(if $(call yes,$(SKIP_ROOTFS_CHECK)),--skip-rootfs-check) \
	  $(if $(BUILD_VARIANT),--variant $(BUILD_VARIANT))

initrd: venv
	@mkdir -p $(dir $(INITRD))
	$(OSB) build-initrd $(OSB_FLAGS) $(ROOTFS_SOURCE) -o "$(INITRD)" $(if $(call yes,$(AGENT_INIT)),--agent-init) \
	  $(if $(INITRD_COMPRESSION),--compression $(INITRD_COMPRESSION)) \
	  $(if $(call yes,$(SKIP_ROOTFS_CHECK)),--skip-rootfs-check)

# The guest kernel (Debian's linux-source, kernel-configs/ fragments) into $(KERNEL_DIR).
kernel: venv
	$(DEFAULT_EPOCH_UNSET) $(OSB) $(OSB_FLAGS) build-kernel --arch $(ARCH) -o $(KERNEL_DIR) $(KERNEL_FLAGS)

# make rootfs [DISTRO=ubuntu] [OS_VERSION=noble] [AGENT_INIT=yes|no] [EXTRA_PKGS="a b"] [USE_DOCKER=true]
#             [AGENT=path | AGENT_TARBALL=path] [DOCKER_BASE=image]
# Without DISTRO: versions.yaml assets.image for ARCH; without OS_VERSION: the recipe's default release.
# Output: $(BUILD_DIR)/rootfs-<distro>-<release>-<systemd|agent> (replaced on every run).
rootfs: venv
	@set -e; distro='$(DISTRO)'; release='$(OS_VERSION)'; \
	if [ -z "$$distro" ]; then \
	  distro=$$($(OSB) versions assets.image.architecture.$(ARCH).name); \
	  [ -n "$$release" ] || release=$$($(OSB) versions assets.image.architecture.$(ARCH).version); \
	fi; \
	if [ -z "$$release" ]; then \
	  release=$$($(OSB) distros --json | $(VENV)/bin/python -c \
	    'import json, sys; print({d["name"]: d for d in json.load(sys.stdin)["distros"]}[sys.argv[1]]["default_release"])' \
	    "$$distro"); \
	fi; \
	init=$(if $(call yes,$(AGENT_INIT)),agent,systemd); [ "$$distro" != minimal ] || init=agent; \
	mkdir -p $(BUILD_DIR); \
	$(OSB) build-rootfs --distro "$$distro" --os-version "$$release" --arch $(ARCH) \
	  $(if $(call yes,$(AGENT_INIT)),--agent-init) $(strip $(ROOTFS_COMMON_FLAGS)) \
	  -o "$(BUILD_DIR)/rootfs-$$distro-$$release-$$init" --force $(OSB_FLAGS)

# The reference agent (static, musl) into $(BUILD_DIR)/kata-agent.
agent: venv
	@mkdir -p $(BUILD_DIR)
	$(OSB) build-agent $(OSB_FLAGS) -o $(BUILD_DIR)/kata-agent

# Boot-check the image and the initrd with the kernel, as the runtime would (QEMU; TCG unless KVM works).
boot: venv
	$(OSB) boot $(OSB_FLAGS) --kernel $(KERNEL_DIR)/vmlinux.container --image $(IMAGE) \
	  $(if $(call yes,$(SKIP_DAX_HEADER)),--no-dax) --fs-type $(FS_TYPE) $(BOOT_FLAGS)
	$(OSB) boot $(OSB_FLAGS) --kernel $(KERNEL_DIR)/vmlinux.container --initrd $(INITRD) $(BOOT_FLAGS)

# The measured variant of the image (dm-verity), with its root hash next to it.
measured-image: venv
	$(MAKE) image IMAGE=$(MEASURED_IMAGE) MEASURED_ROOTFS=yes BUILD_VARIANT=measured

# The kata-static release tarball from the assets, then boot-checked with its own configuration.
bundle: kernel image initrd measured-image bundle-only
	$(OSB) boot $(OSB_FLAGS) --bundle $(BUILD_DIR)/kata-static-*.tar.zst $(BOOT_FLAGS)

# Only the tarball, from assets already in BUILD_DIR (a CI job that gathered them).
bundle-only: venv
	$(OSB) bundle $(OSB_FLAGS) --arch $(ARCH) --kernel-dir $(KERNEL_DIR) --image $(IMAGE) --initrd $(INITRD) \
	  --measured-image $(MEASURED_IMAGE) --measured-root-hash $(dir $(MEASURED_IMAGE))root_hash_measured.txt \
	  $(if $(RUNTIME),--runtime $(RUNTIME)) $(if $(RUNTIME_VERSION),--runtime-version $(RUNTIME_VERSION)) \
	  -o $(BUILD_DIR)

# Re-derive the bundle's reference values (digests, dm-verity, command lines) and check its provenance.
verify: venv
	$(OSB) verify $(OSB_FLAGS) $(BUILD_DIR)/kata-static-*.tar.zst

# One HTML page about the bundle (sizes against budgets, boot timeline, inputs, SBOM packages).
report: venv
	$(OSB) report $(OSB_FLAGS) $(BUILD_DIR)/kata-static-*.tar.zst -o $(BUILD_DIR)/report.html --boot

clean:
	rm -rf $(BUILD_DIR)

distclean: clean
	rm -rf $(VENV)
