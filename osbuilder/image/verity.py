"""dm-verity hash trees, computed in Python over regions of the image file.

The format is exactly `veritysetup format --no-superblock` (hash format 1, sha256, salt first): the
tests compare the hash area and the root hash with veritysetup's. Doing it in Python lets the data
and the hash partition be byte ranges of one file (no loop devices, no extra copies) and the salt
be derived from the inputs. Layout of the hash area: the levels from the top (one block) down to
the level that hashes the data blocks; each hash is padded to a power of two, each block with zeros.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from osbuilder.kernelcmdline import VerityLine

DIGEST_SIZE = 32  # sha256
CHUNK = 4 << 20


@dataclass(frozen=True)
class HashLevels:
    """Where each level of the tree lives, in hash blocks from the start of the hash area."""

    starts: tuple[int, ...]  # level 0 (hashes of data blocks) first
    sizes: tuple[int, ...]
    total_blocks: int


def _bits_down(value: int) -> int:
    bits = 0
    while (value >> bits) > 1:
        bits += 1
    return bits


def levels(data_blocks: int, hash_block_size: int = 4096) -> HashLevels:
    """cryptsetup's hash_levels(): the top level comes first in the hash area."""
    bits = _bits_down(hash_block_size // DIGEST_SIZE)
    count = 0
    while bits * count < 64 and (data_blocks - 1) >> (bits * count):
        count += 1
    starts = [0] * count
    sizes = [0] * count
    position = 0
    for level in range(count - 1, -1, -1):
        starts[level] = position
        shift = (level + 1) * bits
        sizes[level] = (data_blocks + (1 << shift) - 1) >> shift
        position += sizes[level]
    return HashLevels(tuple(starts), tuple(sizes), position)


def hash_area_size(data_blocks: int, hash_block_size: int = 4096) -> int:
    return levels(data_blocks, hash_block_size).total_blocks * hash_block_size


def _hash_blocks(salted: hashlib._Hash, data: memoryview, block_size: int) -> list[bytes]:
    digests = []
    for start in range(0, len(data), block_size):
        digest = salted.copy()
        digest.update(data[start:start + block_size])
        digests.append(digest.digest())
    return digests


def _pack(digests: list[bytes], hash_block_size: int) -> bytes:
    """Digests into hash blocks: 2^n per block (sha256 is already a power of two), zero padded."""
    per_block = 1 << _bits_down(hash_block_size // DIGEST_SIZE)
    out = bytearray()
    for start in range(0, len(digests), per_block):
        block = b"".join(digests[start:start + per_block])
        out += block + bytes(hash_block_size - len(block))
    return bytes(out)


@dataclass(frozen=True)
class Tree:
    """A hash tree computed in memory: the root hash and each level's packed blocks (level 0, which
    hashes the data blocks, first)."""

    root_hash: str
    levels: tuple[bytes, ...]


def compute_tree(fd: int, *, data_offset: int, data_blocks: int, salt: bytes, data_block_size: int = 4096,
                 hash_block_size: int = 4096) -> Tree:
    """Hash `data_blocks` blocks at `data_offset` of `fd` (read in large chunks) and build the tree."""
    if data_blocks <= 0:
        raise ValueError("no data blocks to hash")
    salted = hashlib.sha256(salt)
    tree = levels(data_blocks, hash_block_size)
    digests: list[bytes] = []
    remaining = data_blocks * data_block_size
    position = data_offset
    while remaining:
        chunk = os.pread(fd, min(CHUNK, remaining), position)
        if not chunk:
            raise OSError(f"unexpected end of file at {position} while hashing")
        digests.extend(_hash_blocks(salted, memoryview(chunk), data_block_size))
        position += len(chunk)
        remaining -= len(chunk)
    packed_levels = []
    for level in range(len(tree.starts)):
        packed = _pack(digests, hash_block_size)
        if len(packed) != tree.sizes[level] * hash_block_size:
            raise AssertionError(f"level {level}: {len(packed)} bytes, expected {tree.sizes[level]} blocks")
        packed_levels.append(packed)
        digests = _hash_blocks(salted, memoryview(packed), hash_block_size)
    # The top level is one block (or, with one data block, there is none): its hash is the root hash.
    return Tree(digests[0].hex(), tuple(packed_levels))


def format_region(fd: int, *, data_offset: int, data_blocks: int, hash_offset: int, salt: bytes,
                  data_block_size: int = 4096, hash_block_size: int = 4096) -> VerityLine:
    """Hash `data_blocks` blocks at `data_offset` of `fd`, write the tree at `hash_offset`, and
    return the line for root_hash.txt."""
    tree = compute_tree(fd, data_offset=data_offset, data_blocks=data_blocks, salt=salt,
                        data_block_size=data_block_size, hash_block_size=hash_block_size)
    for start, packed in zip(levels(data_blocks, hash_block_size).starts, tree.levels, strict=True):
        os.pwrite(fd, packed, hash_offset + start * hash_block_size)
    return VerityLine(tree.root_hash, salt.hex(), data_blocks, data_block_size, hash_block_size)


def top_block_matches(fd: int, line: VerityLine, hash_offset: int) -> bool:
    """Cheap consistency check for an inspector: does the hash area's top block hash to the
    recorded root hash? (Verifying the data needs the whole tree; see verify_region.)"""
    if levels(line.data_blocks, line.hash_block_size).starts == ():
        return False
    top = os.pread(fd, line.hash_block_size, hash_offset)
    digest = hashlib.sha256(bytes.fromhex(line.salt))
    digest.update(top)
    return digest.hexdigest() == line.root_hash


def verify_region(fd: int, line: VerityLine, *, data_offset: int, hash_offset: int) -> list[str]:
    """Recompute the whole tree and compare it with the hash area; the problems found."""
    try:
        tree = compute_tree(fd, data_offset=data_offset, data_blocks=line.data_blocks, salt=bytes.fromhex(line.salt),
                            data_block_size=line.data_block_size, hash_block_size=line.hash_block_size)
    except OSError:
        return ["the data area ends early"]
    starts = levels(line.data_blocks, line.hash_block_size).starts
    for level, (start, packed) in enumerate(zip(starts, tree.levels, strict=True)):
        if os.pread(fd, len(packed), hash_offset + start * line.hash_block_size) != packed:
            return [f"hash level {level} does not match the data"]
    if tree.root_hash != line.root_hash:
        return ["the root hash does not match the hash tree"]
    return []
