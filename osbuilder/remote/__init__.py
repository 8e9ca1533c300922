"""The remote cache: cache entries shared through an OCI registry (GHCR, Harbor, the CNCF distribution
registry), so that equal inputs on another machine are a download instead of a build.

  settings.py   --remote-cache oci://HOST[:PORT]/REPO, the mode, credentials (never on the command line)
  client.py     the registry, through ORAS's Python SDK: authentication, timeouts, verified blobs
  artifact.py   a cache entry as one OCI artifact: its files as layers, its manifest as the config
  store.py      the cache's Remote: pull on a local miss, push after a build, every failure said once

Every entry is one artifact tagged by its content key. What is pulled is verified before it enters the
local cache: every blob by its digest, every file by the sha256 its config records, and the config's
recorded inputs by the key (their digest), so a tag that points at another entry is refused.
"""
