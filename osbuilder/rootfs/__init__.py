"""Guest and container root filesystems from distro recipes: one module per job.

    options      the option table of build-rootfs (and of build-image/build-initrd's rootfs)
    distro       which recipe, release, architecture and init mode a request means; the default name
    plan         Request -> Plan: every input resolved and checked, the cache inputs; no side effects
    prepare      the agent compiled or read, the bootstrapper's inputs fetched, the output probed
    build        a cache hit installs the cached tarball; otherwise bootstrap, provision, check, store
    bootstrappers/  "bootstrap this package set": mmdebstrap here, mmdebstrap in a container, none
    tree         a rootfs edited as tar members or in place (RootfsTree)
    provision    Kata's setup_rootfs steps and checks on a RootfsTree
    check        Kata's checks of a rootfs directory (image and initrd builders use them)
    agent        the agent to install: a file, a checked release tarball, or the reference build
    busybox      the minimal recipe's static busybox and its applet links
    manifest     osbuilder.yaml and manifest.json of a built tree
    install      a cached tarball unpacked as the output directory, atomically
    source       where build-image and build-initrd get their rootfs (a directory, or built first)

This package imports nothing here, so that modules using one part (the image builder's checks) do
not load the others.
"""
