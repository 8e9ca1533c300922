"""The host side of a Kata sandbox: what the runtime does around the agent to run a container.

`ocispec` reads an OCI runtime bundle (or makes runc's default spec for a root tree) and applies
the runtime's constraints; `protospec` turns it into the agent's protobuf Spec; `mountns` keeps the
per-sandbox shared directory in a private mount namespace; `virtiofsd` starts the daemon that
exports it; `sandbox` boots the VM and drives the agent through the sandbox and container
lifecycle; `workload` runs one container from start to exit, streaming its output.
"""
