"""The guest kernel: fragment selection and checks, sources, patches, the build, and inspection.

Other modules get a kernel through `osbuilder.kernel.build.build_kernel(KernelOptions(...), versions=, cache=, fetcher=)`,
which returns a `KernelBuild` with the paths of vmlinux, vmlinuz, the config and the build record.
"""
