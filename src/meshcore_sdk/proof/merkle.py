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

Building the root, or the proofs of any number of leaves (:func:`inclusion_proofs`),
hashes each node once: at most ``2n - 1`` hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = ["hash_leaf", "inclusion_proof", "inclusion_proofs", "merkle_root", "verify_inclusion"]

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


class _Tree:
    """The leaf hashes of one tree and the roots of its subtrees, each hashed once when first needed."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self._hashes = [hash_leaf(leaf) for leaf in leaves]
        self._roots: dict[tuple[int, int], bytes] = {}
        self.size = len(self._hashes)

    def root(self, lo: int, hi: int) -> bytes:
        """The root of leaves ``lo..hi-1`` (``hi > lo``)."""
        if hi - lo == 1:
            return self._hashes[lo]
        found = self._roots.get((lo, hi))
        if found is None:
            k = _split(hi - lo)
            found = self._roots[lo, hi] = _hash_node(self.root(lo, lo + k), self.root(lo + k, hi))
        return found

    def path(self, index: int) -> list[bytes]:
        """The sibling hashes from leaf ``index`` up to the root, deepest first."""
        siblings: list[bytes] = []
        lo, hi = 0, self.size
        while hi - lo > 1:
            k = _split(hi - lo)
            if index < lo + k:
                siblings.append(self.root(lo + k, hi))
                hi = lo + k
            else:
                siblings.append(self.root(lo, lo + k))
                lo += k
        siblings.reverse()
        return siblings


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The 32-byte root of ``leaves`` (``SHA-256(b"")`` when there is none)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    return _Tree(leaves).root(0, len(leaves))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The sibling hashes that lead from leaf ``index`` to the root, deepest first."""
    return inclusion_proofs(leaves, [index])[0]


def inclusion_proofs(leaves: Sequence[bytes], indices: Sequence[int]) -> list[list[bytes]]:
    """The inclusion proofs of several leaves of one tree, hashing each node once for all of them."""
    for index in indices:
        if not 0 <= index < len(leaves):
            raise IndexError(f"leaf {index} is not in a tree of {len(leaves)}")
    tree = _Tree(leaves)
    return [tree.path(index) for index in indices]


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
