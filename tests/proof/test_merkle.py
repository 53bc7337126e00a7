"""RFC 6962 Merkle trees: known roots, every proof verifies, any change fails."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcore_sdk.proof.merkle import hash_leaf, inclusion_proof, inclusion_proofs, merkle_root, verify_inclusion

LEAVES = st.lists(st.binary(max_size=40), min_size=1, max_size=70)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_small_trees_follow_rfc6962() -> None:
    """Empty, one leaf, and the uneven split of three leaves (2 left, 1 right)."""
    a, b, c = b"a", b"b", b"c"
    ha, hb, hc = (sha(b"\x00" + leaf) for leaf in (a, b, c))
    assert merkle_root([]) == sha(b"")
    assert merkle_root([a]) == ha == hash_leaf(a)
    assert merkle_root([a, b, c]) == sha(b"\x01" + sha(b"\x01" + ha + hb) + hc)
    assert inclusion_proof([a, b, c], 2) == [sha(b"\x01" + ha + hb)]
    assert inclusion_proof([a, b, c], 0) == [hb, hc]


def test_the_rfc6962_reference_root_of_the_ct_test_vectors() -> None:
    """Certificate Transparency's test leaves and roots (its C++ and Go merkle tree tests).

    The proof does not bind the tree size on its own (index 0 has the same path
    in trees of 3 and 4 leaves): the size is signed in the receipt.
    """
    hexes = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
    leaves = [bytes.fromhex(h) for h in hexes]
    assert merkle_root(leaves).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert merkle_root(leaves[:3]).hex() == "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"


@given(LEAVES, st.data())
def test_every_proof_verifies(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    root = merkle_root(leaves)
    assert verify_inclusion(leaves[index], index, len(leaves), inclusion_proof(leaves, index), root)


@given(LEAVES, st.data())
def test_the_proofs_of_many_leaves_are_each_leafs_own_proof(leaves: list[bytes], data: st.DataObject) -> None:
    indices = data.draw(st.lists(st.integers(0, len(leaves) - 1), max_size=12))
    assert inclusion_proofs(leaves, indices) == [inclusion_proof(leaves, index) for index in indices]


def test_the_proofs_of_many_leaves_hash_each_node_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import meshcore_sdk.proof.merkle as merkle

    calls = 0
    node = merkle._hash_node

    def counted(left: bytes, right: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return node(left, right)

    monkeypatch.setattr(merkle, "_hash_node", counted)
    leaves = [bytes([i % 256, i // 256]) for i in range(1000)]
    inclusion_proofs(leaves, list(range(0, 1000, 7)))
    assert calls <= len(leaves) - 1  # interior nodes of a 1,000-leaf tree


@given(LEAVES, st.data())
def test_a_changed_leaf_index_or_proof_fails(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    index = data.draw(st.integers(0, n - 1))
    root, proof, leaf = merkle_root(leaves), inclusion_proof(leaves, index), leaves[index]
    assert not verify_inclusion(leaf + b"x", index, n, proof, root)
    other = data.draw(st.integers(0, n).filter(lambda i: i != index))
    assert not verify_inclusion(leaf, other, n, proof, root) or (leaves[other % n] == leaf and other < n)
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1))
        bent = [*proof[:at], bytes([proof[at][0] ^ 1]) + proof[at][1:], *proof[at + 1 :]]
        assert not verify_inclusion(leaf, index, n, bent, root)
        assert not verify_inclusion(leaf, index, n, proof[:-1], root)
    assert not verify_inclusion(leaf, index, n, [*proof, root], root)


def test_an_index_outside_the_tree_is_refused() -> None:
    with pytest.raises(IndexError):
        inclusion_proof([b"a"], 1)
    assert not verify_inclusion(b"a", 1, 1, [], merkle_root([b"a"]))
    assert not verify_inclusion(b"a", -1, 1, [], merkle_root([b"a"]))
