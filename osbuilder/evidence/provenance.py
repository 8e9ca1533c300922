"""SLSA provenance v1 in an in-toto attestation statement (v1) for a release bundle, written next
to the tarball; with a key, wrapped in a signed DSSE envelope (securesystemslib).

Subjects: the tarball, SHA256SUMS and every file SHA256SUMS lists (paths as in the tarball).
Resolved dependencies: every pinned input the bundle's manifest and its assets record (kernel
source and configuration fragments, each suite's signed InRelease by digest, recipes, the agent,
the runtime, versions.yaml) and the tools with their versions. External parameters: the options of
the bundle and of each asset's rootfs, and SOURCE_DATE_EPOCH.

Verify a signed one: `osbuilder verify BUNDLE --provenance BUNDLE.intoto.jsonl --public-key KEY.pub`.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from osbuilder import __version__
from osbuilder.errors import BuildError, UsageError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUILD_TYPE = "https://github.com/kata-containers/kata-containers/tools/osbuilder/bundle@v1"
BUILDER_ID = "https://github.com/kata-containers/kata-containers/tools/osbuilder"
UNSIGNED_SUFFIX = ".intoto.json"
SIGNED_SUFFIX = ".intoto.jsonl"


def next_to(bundle: Path) -> Path | None:
    """The provenance written next to a bundle tarball: the signed one, else the unsigned one."""
    for suffix in (SIGNED_SUFFIX, UNSIGNED_SUFFIX):
        candidate = bundle.with_name(bundle.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def _dependency(name: str, *, digest: str | None = None, uri: str | None = None,
                **annotations: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name}
    if uri:
        entry["uri"] = uri
    if digest:
        entry["digest"] = {"sha256": digest}
    notes = {key: value for key, value in annotations.items() if value not in (None, "", [], {})}
    if notes:
        entry["annotations"] = notes
    return entry


def _kernel_dependencies(kernel: dict[str, Any]) -> list[dict[str, Any]]:
    source = kernel.get("source") or {}
    uri = source.get("url")
    if source.get("kind") == "debian" and source.get("package"):
        uri = f"pkg:deb/{source.get('archive', 'debian')}/{source['package']}@{source.get('version', '')}"
    found = [_dependency("kernel-source", digest=source.get("sha256"), uri=uri, kind=source.get("kind"),
                         version=source.get("version"), tree_digest=source.get("tree_digest"))]
    config = kernel.get("config") or {}
    found += [_dependency(f"kernel-configs/{fragment['path']}", digest=fragment["sha256"])
              for fragment in config.get("fragments", [])]
    found += [_dependency(f"kernel-patch/{patch['path']}", digest=patch["sha256"]) for patch in kernel.get("patches", [])]
    return found


def statement(*, tarball: Path, tarball_sha256: str, sums: dict[str, str], sums_sha256: str,
              manifest: dict[str, Any], asset_packages: dict[str, dict[str, Any]], tools: dict[str, str],
              parameters: dict[str, Any]) -> dict[str, Any]:
    """The in-toto statement. `sums`: SHA256SUMS (path below opt/kata -> sha256); `asset_packages`:
    each asset's packages.json (for the signed indexes it was installed from)."""
    subjects = [{"name": tarball.name, "digest": {"sha256": tarball_sha256}},
                {"name": "opt/kata/SHA256SUMS", "digest": {"sha256": sums_sha256}}]
    subjects += [{"name": f"opt/kata/{name}", "digest": {"sha256": digest}} for name, digest in sorted(sums.items())]
    inputs = manifest.get("inputs", {})
    dependencies = _kernel_dependencies(inputs.get("kernel", {}))
    indexes: dict[str, dict[str, Any]] = {}
    for guest in inputs.get("guests", {}).values():
        rootfs = guest.get("rootfs") or {}
        recipe = rootfs.get("recipe") or {}
        if recipe.get("sha256"):
            indexes.setdefault(f"recipe:{recipe.get('name')}", _dependency(
                f"distros/{recipe.get('name')}/recipe.yaml", digest=recipe["sha256"], release=recipe.get("release")))
        agent = rootfs.get("agent") or {}
        if agent.get("sha256"):
            indexes.setdefault(f"agent:{agent['sha256']}", _dependency(
                str(agent.get("name", "kata-agent")), digest=agent["sha256"], version=agent.get("version"),
                source=agent.get("source"), source_sha256=agent.get("source_sha256")))
    for packages in asset_packages.values():
        archive = packages.get("archive", "")
        for index in packages.get("indexes", []):
            key = f"index:{index['inrelease_sha256']}"
            indexes.setdefault(key, _dependency(
                f"{archive} {index['suite']} InRelease", digest=index["inrelease_sha256"],
                uri=f"urn:osbuilder:archive:{archive}:dists/{index['suite']}/InRelease",
                origin=index.get("origin"), codename=index.get("codename"),
                packages_indexes=index.get("packages_indexes")))
    dependencies += [indexes[key] for key in sorted(indexes)]
    runtime = inputs.get("runtime") or {}
    dependencies.append(_dependency("kata-runtime", digest=runtime.get("sha256"),
                                    uri=runtime.get("source") if "://" in str(runtime.get("source")) else None,
                                    version=runtime.get("version")))
    dependencies.append(_dependency("versions.yaml", digest=inputs.get("versions_yaml_sha256")))
    dependencies += [_dependency(name, uri=f"pkg:generic/{name}", version=version)
                     for name, version in sorted(tools.items())]
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": parameters,
                "internalParameters": {"kernel_variant": (inputs.get("kernel") or {}).get("variant"),
                                       "manifest_format": manifest.get("format")},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": {"osbuilder": __version__, **tools}},
                "metadata": {"invocationId": f"urn:sha256:{tarball_sha256}"},
            },
        },
    }


def render(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def _load_private_key(path: Path) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        return load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise UsageError(problem=f"cannot read a PEM private key: {error}", where=f"--sign-key {path}",
                         fix="give an unencrypted PEM key (ed25519, ECDSA P-256 or RSA), e.g. "
                             "openssl genpkey -algorithm ed25519 -out key.pem") from error


def check_sign_key(path: Path) -> None:
    """Bad keys are bad input, found before the bundle is built."""
    _load_private_key(path)


def sign(payload: bytes, key_path: Path) -> bytes:
    """One DSSE envelope (as a JSON line) over the statement."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import CryptoSigner

    signer = CryptoSigner(_load_private_key(key_path))
    envelope = Envelope(payload=payload, payload_type=PAYLOAD_TYPE, signatures={})
    envelope.sign(signer)
    return (json.dumps(envelope.to_dict(), sort_keys=True) + "\n").encode()


def open_statement(path: Path, public_key: Path | None) -> dict[str, Any]:
    """The statement in a provenance file; a signed one is verified against `public_key` first."""
    where = str(path)
    try:
        data = json.loads(path.read_text().splitlines()[0] if path.suffix == ".jsonl" else path.read_text())
    except (OSError, ValueError, IndexError) as error:
        raise BuildError(problem=f"unreadable provenance: {error}", where=where, fix="give the file bundle wrote") from error
    if "payloadType" not in data:
        if public_key is not None:
            raise BuildError(problem="the provenance is not signed, but --public-key was given", where=where,
                             fix="sign it when building the bundle (--sign-key)")
        return dict(data)
    if public_key is None:
        raise UsageError(problem="the provenance is signed; its key is needed to trust it", where=where,
                         fix="pass --public-key KEY.pub")
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import SSlibKey

    try:
        key = SSlibKey.from_crypto(load_pem_public_key(public_key.read_bytes()))
    except (OSError, ValueError) as error:
        raise UsageError(problem=f"cannot read a PEM public key: {error}", where=f"--public-key {public_key}",
                         fix="give the public half of the signing key (openssl pkey -pubout)") from error
    envelope = Envelope.from_dict(data)
    try:
        envelope.verify([key], 1)
    except VerificationError as error:
        raise BuildError(problem=f"the DSSE signature does not verify with {public_key}: {error}", where=where,
                         fix="the provenance was changed or signed with another key") from error
    if envelope.payload_type != PAYLOAD_TYPE:
        raise BuildError(problem=f"payload type {envelope.payload_type}", where=where, fix="not an in-toto statement")
    return dict(json.loads(envelope.payload))


def payload_of(line: bytes) -> bytes:
    return base64.b64decode(json.loads(line)["payload"])
