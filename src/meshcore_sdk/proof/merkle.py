"""RFC 6962 Merkle trees over byte leaves: the commitment to a job's per-token records.

Theory of operation
-------------------
The worker signs only the root (``ReceiptBody.merkle_root``); it keeps the
encoded records (``records.encode_record``) and reveals some of them on demand,
each with an inclusion proof, so the router or an auditor checks a revealed
record against the signed receipt without seeing the others.

The tree is Certificate Transparency's (RFC 6962 §2.1, RFC 9162 §2.1):

* leaf hash ``SHA-256(0x00 || leaf)``, interior node ``SHA-256(0x01 || left || right)``
  (the prefixes keep a leaf from passing for a node, the second-preimage attack);
* ``n`` leaves split at ``k``, the largest power of two below ``n``: the left
  subtree is a complete tree of ``k`` leaves, the right one holds the rest;
* the root of zero leaves is ``SHA-256(b"")``;
* an inclusion proof lists the sibling hashes from the leaf up to the root,
  and :func:`verify_inclusion` is RFC 9162's algorithm §2.1.3.2, which also
  checks that the proof has exactly the length the tree size implies.

Building the root or one proof hashes each node once: ``2n - 1`` hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["hash_leaf", "inclusion_proof", "merkle_root", "verify_inclusion"]

_LEAF = b"\x00"
_NODE = b"\x01"


def hash_leaf(leaf: bytes) -> bytes:
    """``SHA-256(0x00 || leaf)``."""
    return hashlib.sha256(_LEAF + leaf).digest()


def _hash_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _root(hashes: Sequence[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return _hash_node(_root(hashes[:k]), _root(hashes[k:]))


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The 32-byte root of ``leaves`` (``SHA-256(b"")`` when there is none)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    return _root([hash_leaf(leaf) for leaf in leaves])


def _path(hashes: Sequence[bytes], index: int) -> list[bytes]:
    if len(hashes) == 1:
        return []
    k = _split(len(hashes))
    if index < k:
        return [*_path(hashes[:k], index), _root(hashes[k:])]
    return [*_path(hashes[k:], index - k), _root(hashes[:k])]


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The sibling hashes that lead from leaf ``index`` to the root, deepest first."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} is not in a tree of {len(leaves)}")
    return _path([hash_leaf(leaf) for leaf in leaves], index)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Whether ``leaf`` is leaf ``index`` of the tree of ``size`` leaves whose root is ``root``."""
    if not 0 <= index < size:
        return False
    fn, sn, value = index, size - 1, hash_leaf(leaf)
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            value = _hash_node(sibling, value)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            value = _hash_node(value, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and value == root
