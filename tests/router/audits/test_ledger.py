"""The ledger: chain, balances, idempotency, transcripts replayed, the lottery secret (real SQLite files)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from meshcore_router.audits import ledger as ledger_module
from meshcore_router.audits.calibration import CalibrationTable
from meshcore_router.audits.ledger import (
    GENESIS_HASH,
    Balance,
    EntryKind,
    EntryRejected,
    Ledger,
    LedgerCorrupted,
    LedgerError,
    NewEntry,
    audit_entry,
    canonical_json,
    entries_for,
    entry_hash,
    fold,
)
from meshcore_router.audits.reputation import (
    AuditJudged,
    JobServed,
    NodeJoined,
    NodeReputation,
    ReputationConfig,
)
from meshcore_router.audits.verdict import Outcome, Verdict, judge
from meshcore_sdk.proof.report import AuditScores, AuditTier, ChunkScores
from meshcore_sdk.protocol.errors import InternalError, MeshError

pytestmark = pytest.mark.timeout(60)

THRESHOLDS = CalibrationTable.load().lookup(None, "Q4_K_M", "cpu-x86-avx2", "cpu-x86-avx2")


def credit(node: str, amount: int, *, at: float = 1.0, key: str | None = None, job: str | None = None) -> NewEntry:
    return NewEntry(EntryKind.CREDIT_ESCROW, at, node, job, amount, idempotency_key=key)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def ledger(path: Path) -> Any:
    with Ledger.open(path) as opened:
        yield opened


def raw(path: Path) -> sqlite3.Connection:
    """The file opened behind the ledger's back, its guards dropped: what an attacker with the file can do."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("DROP TRIGGER entries_no_update")
    connection.execute("DROP TRIGGER entries_no_delete")
    return connection


def test_module_exports_are_pinned() -> None:
    assert ledger_module.__all__ == [
        "GENESIS_HASH",
        "SLASHED",
        "Balance",
        "Entry",
        "EntryKind",
        "EntryRejected",
        "Judge",
        "Ledger",
        "LedgerCorrupted",
        "LedgerError",
        "NewEntry",
        "ReplayResult",
        "apply",
        "audit_entry",
        "canonical_json",
        "entries_for",
        "entry_hash",
        "fold",
    ]


def test_errors_sit_under_mesh_error_and_are_not_retryable() -> None:
    assert issubclass(LedgerCorrupted, LedgerError) and issubclass(EntryRejected, LedgerError)
    assert issubclass(LedgerError, InternalError) and issubclass(LedgerError, MeshError)
    assert not LedgerCorrupted("x", seq=3).retryable
    assert LedgerCorrupted("x", seq=3).seq == 3


def test_the_file_is_in_wal_mode(ledger: Ledger, path: Path) -> None:
    ledger.append(credit("n", 1))

    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_entries_chain_from_the_genesis_hash(ledger: Ledger) -> None:
    first = ledger.append(credit("n", 5, at=10))
    second = ledger.append(NewEntry(EntryKind.RECEIPT, 11.5, "n", "j-1", payload={"b": [1, 2], "a": "é"}))

    assert (first.seq, first.prev_hash, first.at) == (1, GENESIS_HASH, 10.0)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert second.payload_json == '{"a":"é","b":[1,2]}'
    assert second.payload == {"a": "é", "b": [1, 2]}
    assert second.hash == entry_hash(first.hash, seq=2, entry=second, payload_json=second.payload_json)
    assert ledger.head() == second and ledger.get(1) == first and ledger.get(3) is None
    assert ledger.verify() == 2


def test_canonical_json_is_one_text_per_value() -> None:
    assert canonical_json({"b": 1.5, "a": None}) == '{"a":null,"b":1.5}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


@pytest.mark.parametrize(
    ("tamper", "seq"),
    [
        ("UPDATE entries SET amount_micro = 999 WHERE seq = 3", 3),
        ("UPDATE entries SET payload = '{\"a\":2}' WHERE seq = 2", 2),
        ("UPDATE entries SET node_id = 'thief' WHERE seq = 4", 4),
        ("UPDATE entries SET at = at + 1 WHERE seq = 1", 1),
        ("UPDATE entries SET kind = 'payout' WHERE seq = 5", 5),
        ("DELETE FROM entries WHERE seq = 3", 3),
        ("UPDATE entries SET hash = 'ab' || substr(hash, 3) WHERE seq = 2", 2),
    ],
)
def test_verify_finds_the_first_edited_row(ledger: Ledger, path: Path, tamper: str, seq: int) -> None:
    ledger.append(credit("n", 10))
    ledger.append(NewEntry(EntryKind.AUDIT, 2.0, "n", "j", payload={"a": 1}))
    ledger.append(credit("n", 20))
    ledger.append(credit("m", 30))
    ledger.append(NewEntry(EntryKind.RELEASE_ESCROW, 5.0, "n", None, 5))
    ledger.append(credit("n", 1))
    raw(path).execute(tamper)

    with pytest.raises(LedgerCorrupted) as caught:
        ledger.verify()
    assert caught.value.seq == seq


def test_a_rewritten_row_with_a_recomputed_hash_breaks_the_next_link(ledger: Ledger, path: Path) -> None:
    entries = [ledger.append(credit("n", amount)) for amount in (1, 2, 3)]
    forged = NewEntry(EntryKind.CREDIT_ESCROW, entries[1].at, "n", None, 2000)
    forged_hash = entry_hash(entries[0].hash, seq=2, entry=forged, payload_json="{}")
    connection = raw(path)
    connection.execute("UPDATE entries SET amount_micro = 2000, hash = ? WHERE seq = 2", (forged_hash,))
    connection.execute("UPDATE balances SET escrow_micro = 2004")

    with pytest.raises(LedgerCorrupted, match="does not link") as caught:
        ledger.verify()
    assert caught.value.seq == 3


def test_a_doctored_balance_table_is_caught(ledger: Ledger, path: Path) -> None:
    ledger.append(credit("n", 10))
    raw(path).execute("UPDATE balances SET escrow_micro = 1000000")

    with pytest.raises(LedgerCorrupted, match="balance table"):
        ledger.verify()


def test_triggers_refuse_updates_and_deletes(ledger: Ledger, path: Path) -> None:
    ledger.append(credit("n", 10))
    connection = sqlite3.connect(path, isolation_level=None)

    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        connection.execute("UPDATE entries SET amount_micro = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        connection.execute("DELETE FROM entries")


def test_balances_fold_from_the_entries(ledger: Ledger) -> None:
    ledger.append_many([credit("a", 100), credit("a", 50), credit("b", 7)])
    ledger.append(NewEntry(EntryKind.RELEASE_ESCROW, 2.0, "a", None, 120))
    ledger.append(NewEntry(EntryKind.PAYOUT, 3.0, "a", None, 20))
    ledger.append(NewEntry(EntryKind.STANDING, 3.5, "b", payload={"standing": "escalated", "reason": "flag"}))
    frozen = ledger.append(NewEntry(EntryKind.FREEZE, 4.0, "b"))
    ledger.append(NewEntry(EntryKind.SLASH, 4.0, "b", payload={"standing": "slashed"}))
    ledger.append(NewEntry(EntryKind.EPOCH_COMMIT, 5.0, payload={"index": 1, "commitment": "00"}))

    expected = {
        "a": Balance(escrow_micro=30, available_micro=100, frozen_micro=0),
        "b": Balance(frozen_micro=7, standing="slashed"),
    }
    assert frozen.amount_micro == 7  # the ledger fills in what it froze
    assert ledger.balances() == expected
    assert fold(ledger.entries()) == expected
    assert ledger.balance("a") == expected["a"] and ledger.balance("nobody") == Balance()
    assert ledger.verify() == 9


@pytest.mark.parametrize(
    "entry",
    [
        NewEntry(EntryKind.RELEASE_ESCROW, 1.0, "a", None, 16),
        NewEntry(EntryKind.PAYOUT, 1.0, "a", None, 1),
        NewEntry(EntryKind.CREDIT_ESCROW, 1.0, "a", None, -1),
        NewEntry(EntryKind.CREDIT_ESCROW, 1.0, None, None, 1),
        NewEntry(EntryKind.STANDING, 1.0, "a", payload={"reason": "no standing"}),
        NewEntry(EntryKind.RECEIPT, 1.0, "a", payload={"x": float("inf")}),
        NewEntry(EntryKind.RECEIPT, 1.0, "a", payload={"x": object()}),
    ],
)
def test_bad_entries_are_refused_and_their_batch_rolled_back(ledger: Ledger, entry: NewEntry) -> None:
    ledger.append(credit("a", 10))

    with pytest.raises(EntryRejected):
        ledger.append_many([credit("a", 5), entry])

    assert ledger.balance("a") == Balance(escrow_micro=10)
    assert ledger.head() is not None and ledger.head().seq == 1  # type: ignore[union-attr]
    assert ledger.verify() == 1


def test_a_slashed_node_gets_no_more_money_or_standing(ledger: Ledger) -> None:
    ledger.append(credit("a", 10))
    ledger.append_many([NewEntry(EntryKind.FREEZE, 2.0, "a"), NewEntry(EntryKind.SLASH, 2.0, "a")])

    for kind in (EntryKind.CREDIT_ESCROW, EntryKind.RELEASE_ESCROW, EntryKind.PAYOUT):
        with pytest.raises(EntryRejected, match="slashed"):
            ledger.append(NewEntry(kind, 3.0, "a", None, 1))
    with pytest.raises(EntryRejected, match="slashed is terminal"):
        ledger.append(NewEntry(EntryKind.STANDING, 3.0, "a", payload={"standing": "active"}))
    ledger.append(NewEntry(EntryKind.STANDING, 3.0, "a", payload={"standing": "slashed", "reason": "why"}))
    ledger.append(NewEntry(EntryKind.AUDIT, 3.0, "a", "late", payload={}))  # evidence is still recorded
    assert ledger.balance("a") == Balance(frozen_micro=10, standing="slashed")


def test_an_idempotency_key_returns_the_entry_already_written(ledger: Ledger, path: Path) -> None:
    first = ledger.append(credit("a", 10, key="credit:a:j1"))

    again = ledger.append(credit("a", 10, at=99.0, key="credit:a:j1"))
    batch = ledger.append_many([credit("a", 1, key="k2"), credit("a", 1, key="k2"), credit("a", 1, key="credit:a:j1")])

    assert again == first
    assert batch[0] == batch[1] and batch[2] == first
    assert ledger.balance("a").escrow_micro == 11
    assert ledger.find("k2") == batch[0] and ledger.find("absent") is None
    ledger.close()
    with Ledger.open(path) as reopened:  # a restarted router retrying
        assert reopened.append(credit("a", 10, key="credit:a:j1")) == first
        assert reopened.verify() == 2


def test_entries_are_read_in_order_in_pages_and_by_kind(ledger: Ledger) -> None:
    ledger.append_many([credit("a", 1) if i % 3 else NewEntry(EntryKind.RECEIPT, 1.0, "a") for i in range(1300)])

    assert [e.seq for e in ledger.entries()] == list(range(1, 1301))
    receipts = [e.seq for e in ledger.entries(kind=EntryKind.RECEIPT)]
    assert receipts == list(range(1, 1301, 3))
    assert [e.seq for e in ledger.entries(after_seq=1295)] == [1296, 1297, 1298, 1299, 1300]


def test_the_master_secret_is_made_once_and_kept(ledger: Ledger, path: Path) -> None:
    made: list[bytes] = []

    def generate() -> bytes:
        made.append(bytes(range(32)))
        return made[-1]

    assert ledger.master_secret(generate) == bytes(range(32))
    assert ledger.master_secret(generate) == bytes(range(32))
    ledger.close()
    with Ledger.open(path) as reopened:
        assert reopened.master_secret(lambda: b"\xff" * 32) == bytes(range(32))
    assert len(made) == 1


def test_a_short_master_secret_is_refused(ledger: Ledger) -> None:
    with pytest.raises(MeshError):
        ledger.master_secret(lambda: b"short")
    assert ledger.master_secret(lambda: b"k" * 16) == b"k" * 16


def scores(kl: float) -> AuditScores:
    chunk = ChunkScores(start=0, n=32, s_lp=0.05, kl=kl, tok_disagree=0.0, margin_min=0.5, hid_exp=2)
    return AuditScores(tier=AuditTier.PREFILL, positions=32, chunks=(chunk,), s_lp=0.05, kl=0.002)


def test_audit_transcripts_replay_to_the_recorded_verdicts(ledger: Ledger) -> None:
    """Research §7 T4: anyone holding the file can judge every audit again."""
    for i, kl in enumerate([0.001, 0.0071234567891234, 0.44]):
        verdict = judge(scores(kl), THRESHOLDS)
        ledger.append(
            audit_entry(
                at=float(i),
                node_id="n",
                job_id=f"j{i}",
                auditor_id="aud",
                scores=scores(kl),
                thresholds=THRESHOLDS,
                verdict=verdict,
            )
        )
    lie = Verdict(outcome=Outcome.PASS)  # a router that recorded PASS for a flagged audit
    ledger.append(
        audit_entry(
            at=9.0, node_id="n", job_id="j9", auditor_id="aud", scores=scores(0.44), thresholds=THRESHOLDS, verdict=lie
        )
    )

    results = ledger.replay(judge)

    assert [(r.job_id, r.replayed.outcome, r.matches) for r in results] == [
        ("j0", Outcome.PASS, True),
        ("j1", Outcome.AMBIGUOUS, True),
        ("j2", Outcome.FLAG, True),
        ("j9", Outcome.FLAG, False),
    ]
    assert results[3].recorded == lie


def test_a_replay_of_an_unreadable_transcript_is_corruption(ledger: Ledger) -> None:
    thresholds = THRESHOLDS.model_dump(mode="json")
    ledger.append(NewEntry(EntryKind.AUDIT, 1.0, "n", "j", payload={"verdict": {"outcome": "flag"}}))  # not judged
    ledger.append(NewEntry(EntryKind.AUDIT, 1.0, "n", "j", payload={"scores": {"tier": "Z"}, "thresholds": thresholds}))

    with pytest.raises(LedgerCorrupted) as caught:
        ledger.replay(judge)
    assert caught.value.seq == 2


def test_audit_entries_the_judge_did_not_reach_are_not_replayed(ledger: Ledger) -> None:
    ledger.append(NewEntry(EntryKind.AUDIT, 1.0, "n", "j", payload={"verdict": {"outcome": "flag"}}))

    assert ledger.replay(judge) == ()


def test_a_standing_cores_actions_become_entries_and_a_retry_adds_nothing(ledger: Ledger) -> None:
    node = NodeReputation("n", ReputationConfig(probation_jobs=1, escrow_hold_s=10.0))
    actions = node.handle(NodeJoined("n"), now=0.0)
    actions += node.handle(JobServed("n", "j1", tokens=40), now=1.0)
    actions += node.handle_timer(now=20.0)
    actions += node.handle(JobServed("n", "j2", tokens=2), now=21.0)
    flag = Verdict(outcome=Outcome.FLAG, reasons=("x",))
    actions += node.handle(AuditJudged("n", "j2", flag, AuditTier.REPLAY, "a1"), now=22.0)
    actions += node.handle(AuditJudged("n", "j2", flag, AuditTier.REPLAY, "a2", second_opinion=True), now=23.0)

    entries = entries_for(actions, at=30.0)
    ledger.append_many(entries)
    ledger.append_many([entry for entry in entries if entry.idempotency_key is not None])  # the retry

    assert [entry.kind for entry in ledger.entries()] == [
        EntryKind.STANDING,  # joined
        EntryKind.CREDIT_ESCROW,
        EntryKind.STANDING,  # probation complete
        EntryKind.RELEASE_ESCROW,
        EntryKind.CREDIT_ESCROW,
        EntryKind.STANDING,  # escalated
        EntryKind.FREEZE,
        EntryKind.SLASH,
    ]
    assert ledger.balance("n") == Balance(frozen_micro=42, standing="slashed")
    assert ledger.verify() == 8


def test_escrow_released_in_other_batches_after_a_restart_lands_once_per_job(ledger: Ledger) -> None:
    def served(timer_at: list[float]) -> list[NewEntry]:
        node = NodeReputation("n", ReputationConfig(probation_jobs=0, escrow_hold_s=10.0))
        entries = entries_for(node.handle(NodeJoined("n"), now=0.0), at=0.0)
        for i, at in enumerate((1.0, 2.0, 3.0)):
            entries += entries_for(node.handle(JobServed("n", f"j{i}", tokens=10), now=at), at=at)
        for at in timer_at:
            entries += entries_for(node.handle_timer(now=at), at=at)
        return entries

    ledger.append_many(served([11.5]))  # live: j0 matured alone, then the router died
    ledger.append_many(served([12.5, 20.0]))  # replay: j0 and j1 together, then j2

    releases = [entry for entry in ledger.entries() if entry.kind is EntryKind.RELEASE_ESCROW]
    assert [entry.job_id for entry in releases] == ["j0", "j1", "j2"]
    assert ledger.balance("n").available_micro == 30 and ledger.balance("n").escrow_micro == 0


def test_sqlite_errors_become_ledger_errors(tmp_path: Path) -> None:
    with pytest.raises(LedgerError):
        Ledger.open(tmp_path / "missing-dir" / "ledger.db")


def test_the_package_exports_are_pinned() -> None:
    import meshcore_router.audits as audits

    assert audits.__all__ == [
        "CalibrationNotFound",
        "CalibrationTable",
        "Ledger",
        "LedgerCorrupted",
        "LedgerError",
        "NodeReputation",
        "Outcome",
        "ReputationBook",
        "ReputationConfig",
        "Standing",
        "Thresholds",
        "Verdict",
        "judge",
    ]
