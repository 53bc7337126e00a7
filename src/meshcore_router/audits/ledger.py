"""The router's ledger: an append-only, hash-chained record of money and evidence, in SQLite.

Theory of operation (research §6.6, §6.8)
------------------------------------------
Every consequence of an audit (escrow credited or released, a balance frozen,
a node slashed) and every piece of evidence (audit transcripts, receipts, the
lottery's epoch commitments and reveals) is one row of the ``entries`` table:

=================  ==============================================================
column             meaning
=================  ==============================================================
``seq``            1, 2, 3, ... with no gap (the integer primary key)
``at``             when, in unix seconds, as the caller says (the ledger reads no clock)
``kind``           an :class:`EntryKind`
``node_id``        the node it concerns, if any
``job_id``         the job it concerns, if any
``amount_micro``   micro-credits (integers: money is never a float), >= 0
``payload``        canonical JSON (sorted keys, no spaces, no NaN)
``idempotency_key``  optional; a second append with the same key returns the first entry
``prev_hash``      the previous entry's ``hash`` (64 zeros before the first)
``hash``           SHA-256(prev_hash bytes || canonical JSON of every column above)
=================  ==============================================================

Changing, removing or reordering any row breaks the chain from that row on:
:meth:`Ledger.verify` re-walks it and raises :class:`LedgerCorrupted` at the
first broken link.  Triggers refuse UPDATE and DELETE, which stops bugs, not an
attacker with the file; the chain is what catches the attacker.

Durability: the database runs in WAL mode with ``synchronous=FULL`` and every
:meth:`Ledger.append` (or :meth:`Ledger.append_many`, for several entries that
must land together) is one transaction, so an entry whose append returned
survives a crash of the router or of the machine.

Balances are derived state.  :func:`fold` computes them from the entries
(:func:`apply` is the one-entry step), and the ``balances`` side table keeps
the same fold up to date inside each append's transaction, so reading a
balance costs one row.  ``verify`` checks that the two agree.

==================  ======================================  =====================================
kind                balance effect                          refused when
==================  ======================================  =====================================
credit_escrow       escrow += amount                        node slashed
release_escrow      escrow -= amount; available += amount   escrow < amount, node slashed
payout              available -= amount                     available < amount, node slashed
freeze              frozen += escrow + available; both 0    (amount is set by the ledger)
slash               standing = slashed                      --
standing            standing = payload["standing"]          node slashed, unless it says slashed
audit, receipt,     none                                    --
epoch_commit,
epoch_reveal
==================  ======================================  =====================================

Audit transcripts (:func:`audit_entry`) hold the scores, the thresholds and the
verdict, so :meth:`Ledger.replay` can judge every audit again and say whether
the recorded verdict follows: anyone holding the file can.

The lottery's master secret lives in a ``secrets`` table outside the chain (it
must stay secret), created once by :meth:`Ledger.master_secret`, so a restarted
router keeps its epochs.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from pydantic import ValidationError

from meshcore_router.audits.calibration import Thresholds
from meshcore_router.audits.reputation import (
    Action,
    AppendTranscript,
    CreditEscrow,
    FreezeBalance,
    ReleaseEscrow,
    Standing,
)
from meshcore_router.audits.verdict import Verdict
from meshcore_sdk.proof.report import AuditScores
from meshcore_sdk.protocol.errors import ConfigError, InternalError

__all__ = [
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

GENESIS_HASH: Final = "0" * 64
"""The ``prev_hash`` of the first entry."""

SLASHED: Final = "slashed"
"""The standing a ``slash`` entry sets; no later entry may change it."""

_MASTER_SECRET: Final = "lottery_master"
_SCHEMA_VERSION: Final = 1
_BATCH_ROWS: Final = 512

Judge = Callable[[AuditScores, Thresholds], Verdict]
"""What :meth:`Ledger.replay` re-judges with: :func:`meshcore_router.audits.verdict.judge`."""


class LedgerError(InternalError):
    """The ledger failed: its database could not be read or written."""

    default_retryable = False


class LedgerCorrupted(LedgerError):
    """The hash chain or the derived balances do not hold together.

    Attributes:
        seq: the first entry found broken (None when the damage is not in one entry).
    """

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


class EntryRejected(LedgerError):
    """An entry was refused before it was written: a negative amount, an overdraft, a slashed node."""


class EntryKind(enum.StrEnum):
    """What an entry records (the module docstring has each one's effect on balances)."""

    CREDIT_ESCROW = "credit_escrow"
    RELEASE_ESCROW = "release_escrow"
    PAYOUT = "payout"
    FREEZE = "freeze"
    SLASH = "slash"
    STANDING = "standing"
    AUDIT = "audit"
    RECEIPT = "receipt"
    EPOCH_COMMIT = "epoch_commit"
    EPOCH_REVEAL = "epoch_reveal"


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An entry to append; the ledger gives it its ``seq`` and hashes."""

    kind: EntryKind
    at: float
    node_id: str | None = None
    job_id: str | None = None
    amount_micro: int = 0
    payload: Mapping[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One written entry, as stored (``payload_json`` is its canonical JSON text)."""

    seq: int
    at: float
    kind: EntryKind
    node_id: str | None
    job_id: str | None
    amount_micro: int
    payload_json: str
    idempotency_key: str | None
    prev_hash: str
    hash: str

    @property
    def payload(self) -> Any:
        """The payload, parsed."""
        return json.loads(self.payload_json)


@dataclass(frozen=True, slots=True)
class Balance:
    """One node's money in micro-credits, and its standing as last recorded."""

    escrow_micro: int = 0
    available_micro: int = 0
    frozen_micro: int = 0
    standing: str | None = None


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """One audit transcript judged again: the verdict recorded and the one the judge gives now."""

    seq: int
    node_id: str | None
    job_id: str | None
    recorded: Verdict
    replayed: Verdict

    @property
    def matches(self) -> bool:
        """Whether the replay reaches the recorded verdict."""
        return self.recorded == self.replayed


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no spaces and no NaN: one text per value, the bytes the chain hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def entry_hash(prev_hash: str, *, seq: int, entry: NewEntry | Entry, payload_json: str) -> str:
    """SHA-256 of the previous hash's bytes followed by the entry's canonical JSON, as hex."""
    body = {
        "seq": seq,
        "at": entry.at,
        "kind": str(entry.kind),
        "node_id": entry.node_id,
        "job_id": entry.job_id,
        "amount_micro": entry.amount_micro,
        "payload": json.loads(payload_json),
        "idempotency_key": entry.idempotency_key,
    }
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_json(body).encode()).hexdigest()


def apply(balance: Balance, entry: NewEntry | Entry) -> Balance:
    """One entry's effect on its node's balance; :class:`EntryRejected` if the entry is not allowed."""
    amount, kind = entry.amount_micro, entry.kind
    if amount < 0:
        raise EntryRejected(f"negative amount {amount} in a {kind} entry")
    if balance.standing == SLASHED and kind in _REFUSED_WHEN_SLASHED:
        raise EntryRejected(f"{kind} for slashed node {entry.node_id}")
    if kind is EntryKind.CREDIT_ESCROW:
        return replace(balance, escrow_micro=balance.escrow_micro + amount)
    if kind is EntryKind.RELEASE_ESCROW:
        _need(balance.escrow_micro, amount, "escrow", entry)
        return replace(
            balance, escrow_micro=balance.escrow_micro - amount, available_micro=balance.available_micro + amount
        )
    if kind is EntryKind.PAYOUT:
        _need(balance.available_micro, amount, "available", entry)
        return replace(balance, available_micro=balance.available_micro - amount)
    if kind is EntryKind.FREEZE:
        return _freeze(balance, entry)
    if kind is EntryKind.SLASH:
        return replace(balance, standing=SLASHED)
    if kind is EntryKind.STANDING:
        standing = _standing_of(entry)
        if balance.standing == SLASHED and standing != SLASHED:
            raise EntryRejected(f"standing {standing} for slashed node {entry.node_id}: slashed is terminal")
        return replace(balance, standing=standing)
    return balance


_REFUSED_WHEN_SLASHED: Final = frozenset({EntryKind.CREDIT_ESCROW, EntryKind.RELEASE_ESCROW, EntryKind.PAYOUT})
_MONEY_KINDS: Final = frozenset(
    {EntryKind.CREDIT_ESCROW, EntryKind.RELEASE_ESCROW, EntryKind.PAYOUT, EntryKind.FREEZE, EntryKind.SLASH}
)


def _need(have: int, amount: int, what: str, entry: NewEntry | Entry) -> None:
    if have < amount:
        raise EntryRejected(f"{entry.kind} of {amount} for {entry.node_id}: only {have} {what}")


def _freeze(balance: Balance, entry: NewEntry | Entry) -> Balance:
    held = balance.escrow_micro + balance.available_micro
    if entry.amount_micro != held:
        raise EntryRejected(f"freeze of {entry.amount_micro} for {entry.node_id}: it holds {held}")
    return Balance(frozen_micro=balance.frozen_micro + held, standing=balance.standing)


def _standing_of(entry: NewEntry | Entry) -> str:
    payload = json.loads(entry.payload_json) if isinstance(entry, Entry) else entry.payload
    standing = payload.get("standing") if isinstance(payload, Mapping) else None
    if not isinstance(standing, str) or not standing:
        raise EntryRejected("a standing entry needs a payload with a 'standing' string")
    return standing


def fold(entries: Iterable[Entry]) -> dict[str, Balance]:
    """Every node's balance after ``entries``, in order (entries without a node are skipped)."""
    balances: dict[str, Balance] = {}
    for entry in entries:
        if entry.node_id is not None:
            balances[entry.node_id] = apply(balances.get(entry.node_id, Balance()), entry)
    return balances


def audit_entry(
    *,
    at: float,
    node_id: str,
    job_id: str,
    auditor_id: str,
    scores: AuditScores,
    thresholds: Thresholds,
    verdict: Verdict,
    second_opinion: bool = False,
    idempotency_key: str | None = None,
) -> NewEntry:
    """The transcript entry of one judged audit: enough for anyone to judge it again."""
    payload = {
        "auditor_id": auditor_id,
        "second_opinion": second_opinion,
        "scores": scores.model_dump(mode="json"),
        "thresholds": thresholds.model_dump(mode="json"),
        "verdict": verdict.model_dump(mode="json"),
    }
    return NewEntry(EntryKind.AUDIT, at, node_id, job_id, 0, payload, idempotency_key)


def entries_for(actions: Iterable[Action], *, at: float) -> list[NewEntry]:
    """The ledger entries that a reputation core's actions call for, with idempotency keys where they are unique.

    Routing weights, audit rates, bans and second-audit requests are operational
    and write nothing; the ``slash`` entry records the ban.
    """
    return [entry for action in actions for entry in _entries_for(action, at)]


def _entries_for(action: Action, at: float) -> Iterator[NewEntry]:
    node = action.node_id
    match action:
        case CreditEscrow(job_id=job, amount_micro=amount, matures_at=matures_at):
            payload: dict[str, Any] = {"matures_at": matures_at}
            yield NewEntry(EntryKind.CREDIT_ESCROW, at, node, job, amount, payload, f"credit_escrow:{node}:{job}")
        case ReleaseEscrow(releases=releases):
            for job, amount in releases:
                yield NewEntry(EntryKind.RELEASE_ESCROW, at, node, job, amount, {}, f"release_escrow:{node}:{job}")
        case FreezeBalance():
            yield NewEntry(EntryKind.FREEZE, at, node, idempotency_key=f"freeze:{node}")
        case AppendTranscript(standing=standing, reason=reason, job_id=job):
            payload = {"standing": str(standing), "reason": reason}
            if standing is Standing.SLASHED:
                yield NewEntry(EntryKind.SLASH, at, node, job, 0, payload, f"slash:{node}")
            else:
                yield NewEntry(EntryKind.STANDING, at, node, job, 0, payload)


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    node_id TEXT,
    job_id TEXT,
    amount_micro INTEGER NOT NULL CHECK (amount_micro >= 0),
    payload TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_kind ON entries (kind, seq);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TABLE IF NOT EXISTS balances (
    node_id TEXT PRIMARY KEY,
    escrow_micro INTEGER NOT NULL,
    available_micro INTEGER NOT NULL,
    frozen_micro INTEGER NOT NULL,
    standing TEXT
);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""

_COLUMNS: Final = "seq, at, kind, node_id, job_id, amount_micro, payload, idempotency_key, prev_hash, hash"


def _entry_from_row(row: Sequence[Any]) -> Entry:
    seq, at, kind, node_id, job_id, amount, payload, key, prev_hash, hash_ = row
    try:
        entry_kind = EntryKind(kind)
    except ValueError as exc:
        raise LedgerCorrupted(f"entry {seq} has an unknown kind {kind!r}", seq=seq) from exc
    return Entry(seq, float(at), entry_kind, node_id, job_id, int(amount), payload, key, prev_hash, hash_)


class Ledger:
    """The ledger in one SQLite file (see the module docstring).

    Open it with :meth:`open`; it is safe to call from several threads (one
    lock serializes them) but only one process should write the file.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: Path | str) -> Ledger:
        """Open (creating if needed) the ledger at ``path``, in WAL mode with ``synchronous=FULL``."""
        try:
            connection = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode not in ("wal", "memory"):
                connection.close()
                raise ConfigError(f"the ledger at {path} cannot use WAL (journal mode {mode!r})")
            connection.execute("PRAGMA synchronous=FULL")
            connection.executescript(_SCHEMA)
            connection.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger at {path}: {exc}") from exc
        return cls(connection)

    def close(self) -> None:
        """Close the database; entries already appended are on disk."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    # --- writing --------------------------------------------------------------------------

    def append(self, entry: NewEntry) -> Entry:
        """Write one entry durably and return it; an entry whose idempotency key exists is returned as it was."""
        return self.append_many([entry])[0]

    def append_many(self, entries: Sequence[NewEntry]) -> tuple[Entry, ...]:
        """Write several entries in one transaction: all of them land, or none."""
        with self._lock, _transaction(self._db):
            return tuple(self._append_one(entry) for entry in entries)

    def _append_one(self, entry: NewEntry) -> Entry:
        existing = None if entry.idempotency_key is None else self.find(entry.idempotency_key)
        if existing is not None:
            return existing
        entry = replace(entry, at=float(entry.at), kind=EntryKind(entry.kind))
        balance = self.balance(entry.node_id) if entry.node_id is not None else Balance()
        if entry.kind is EntryKind.FREEZE:
            entry = replace(entry, amount_micro=balance.escrow_micro + balance.available_micro)
        if entry.node_id is not None:
            self._store_balance(entry.node_id, apply(balance, entry))
        elif entry.kind in _MONEY_KINDS:
            raise EntryRejected(f"a {entry.kind} entry needs a node_id")
        return self._insert(entry)

    def _insert(self, entry: NewEntry) -> Entry:
        head = self._db.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev_hash = (1, GENESIS_HASH) if head is None else (head[0] + 1, head[1])
        try:
            payload_json = canonical_json(dict(entry.payload))
            hash_ = entry_hash(prev_hash, seq=seq, entry=entry, payload_json=payload_json)
        except (TypeError, ValueError) as exc:
            raise EntryRejected(f"a {entry.kind} entry is not plain JSON (payload, time): {exc}") from exc
        chained = (payload_json, entry.idempotency_key, prev_hash, hash_)
        written = Entry(seq, entry.at, entry.kind, entry.node_id, entry.job_id, entry.amount_micro, *chained)
        self._db.execute(f"INSERT INTO entries ({_COLUMNS}) VALUES ({', '.join('?' * 10)})", astuple(written))
        return written

    def _store_balance(self, node_id: str, balance: Balance) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO balances VALUES (?, ?, ?, ?, ?)",
            (node_id, balance.escrow_micro, balance.available_micro, balance.frozen_micro, balance.standing),
        )

    # --- reading --------------------------------------------------------------------------

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock, _mapped():
            return self._db.execute(sql, args).fetchall()

    def _entry(self, where: str, args: Sequence[Any] = ()) -> Entry | None:
        rows = self._rows(f"SELECT {_COLUMNS} FROM entries {where} LIMIT 1", args)
        return _entry_from_row(rows[0]) if rows else None

    def head(self) -> Entry | None:
        """The last entry, or None for an empty ledger."""
        return self._entry("ORDER BY seq DESC")

    def get(self, seq: int) -> Entry | None:
        """The entry numbered ``seq``, if there is one."""
        return self._entry("WHERE seq = ?", (seq,))

    def find(self, idempotency_key: str) -> Entry | None:
        """The entry appended with ``idempotency_key``, if any."""
        return self._entry("WHERE idempotency_key = ?", (idempotency_key,))

    def entries(self, *, after_seq: int = 0, kind: EntryKind | None = None) -> Iterator[Entry]:
        """Entries after ``after_seq`` in order, optionally of one kind, read in batches."""
        where = "seq > ?" if kind is None else "seq > ? AND kind = ?"
        while rows := self._rows(
            f"SELECT {_COLUMNS} FROM entries WHERE {where} ORDER BY seq LIMIT {_BATCH_ROWS}",
            (after_seq,) if kind is None else (after_seq, str(kind)),
        ):
            yield from map(_entry_from_row, rows)
            after_seq = rows[-1][0]

    def balance(self, node_id: str) -> Balance:
        """One node's balance and standing (all zero for a node the ledger has never seen)."""
        rows = self._rows("SELECT * FROM balances WHERE node_id = ?", (node_id,))
        return Balance(*rows[0][1:]) if rows else Balance()

    def balances(self) -> dict[str, Balance]:
        """Every node's balance, from the side table."""
        return {node_id: Balance(*rest) for node_id, *rest in self._rows("SELECT * FROM balances ORDER BY node_id")}

    # --- checking -------------------------------------------------------------------------

    def verify(self) -> int:
        """Re-walk the chain and re-fold the balances; returns the number of entries.

        Raises:
            LedgerCorrupted: at the first entry whose number, link or hash is wrong,
                or when the balance side table differs from the fold of the entries.
        """
        prev_hash, expected_seq, folded = GENESIS_HASH, 1, dict[str, Balance]()
        for entry in self.entries():
            _check_link(entry, expected_seq, prev_hash)
            if entry.node_id is not None:
                try:
                    folded[entry.node_id] = apply(folded.get(entry.node_id, Balance()), entry)
                except EntryRejected as exc:
                    raise LedgerCorrupted(f"entry {entry.seq} is not allowed: {exc}", seq=entry.seq) from exc
            prev_hash, expected_seq = entry.hash, expected_seq + 1
        if folded != self.balances():
            raise LedgerCorrupted("the balance table differs from the fold of the entries")
        return expected_seq - 1

    def replay(self, judge: Judge) -> tuple[ReplayResult, ...]:
        """Judge every audit transcript again; each result says whether the recorded verdict follows.

        Transcripts are the ``audit`` entries that carry thresholds (:func:`audit_entry`); an
        ``audit`` entry without them records a verdict the judge did not reach (a failed
        sampler check, say) and is left to its own check.
        """
        results = []
        for entry in self.entries(kind=EntryKind.AUDIT):
            payload = entry.payload
            if isinstance(payload, dict) and "thresholds" not in payload:
                continue
            try:
                scores = AuditScores.model_validate(payload["scores"])
                thresholds = Thresholds.model_validate(payload["thresholds"])
                recorded = Verdict.model_validate(payload["verdict"])
            except (KeyError, TypeError, ValueError, ValidationError) as exc:
                raise LedgerCorrupted(f"audit entry {entry.seq} is not a transcript: {exc}", seq=entry.seq) from exc
            results.append(ReplayResult(entry.seq, entry.node_id, entry.job_id, recorded, judge(scores, thresholds)))
        return tuple(results)

    # --- the lottery's secret -------------------------------------------------------------

    def master_secret(self, generate: Callable[[], bytes]) -> bytes:
        """The lottery master secret: the stored one, or ``generate()``'s, stored durably on first use."""
        with self._lock, _transaction(self._db):
            row = self._db.execute("SELECT value FROM secrets WHERE name = ?", (_MASTER_SECRET,)).fetchone()
            if row is not None:
                return bytes(row[0])
            secret = generate()
            if not isinstance(secret, bytes) or len(secret) < 16:
                raise ConfigError("the master secret must be at least 16 bytes")
            self._db.execute("INSERT INTO secrets VALUES (?, ?)", (_MASTER_SECRET, secret))
            return secret


def _check_link(entry: Entry, expected_seq: int, prev_hash: str) -> None:
    if entry.seq != expected_seq:
        raise LedgerCorrupted(f"entry {expected_seq} is missing (found {entry.seq})", seq=expected_seq)
    if entry.prev_hash != prev_hash:
        raise LedgerCorrupted(f"entry {entry.seq} does not link to entry {entry.seq - 1}", seq=entry.seq)
    try:
        recomputed = entry_hash(prev_hash, seq=entry.seq, entry=entry, payload_json=entry.payload_json)
    except ValueError as exc:
        raise LedgerCorrupted(f"entry {entry.seq} is unreadable: {exc}", seq=entry.seq) from exc
    if recomputed != entry.hash:
        raise LedgerCorrupted(f"entry {entry.seq} was changed: its hash does not match", seq=entry.seq)


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """Turns sqlite3's errors into :class:`LedgerError`."""
    try:
        yield
    except sqlite3.Error as exc:
        raise LedgerError(f"the ledger's database failed: {exc}") from exc


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any error."""
    with _mapped():
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
