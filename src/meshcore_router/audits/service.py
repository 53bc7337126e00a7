"""The audit driver: every receipt checked, a lottery-drawn few audited, the books kept.

Theory of operation (``docs/concepts/audits.md``, ``docs/protocol.md`` §9)
--------------------------------------------------------------------------
The router tells :class:`AuditService` of each job it sends a node
(:meth:`~AuditService.dispatched`: the ``generate`` frame as the node got it).
The node's ``receipt`` arrives on its link when the job ends; for each one, in
its own task (at most ``max_concurrent_checks`` at once):

1. **Free checks** (no model): the receipt parses; its signature verifies with
   the key the node registered; it names this job, this node and the model the
   job was sent for; its build class is allowed; it came before its epoch's
   secret was revealed.  Then the node reveals the records of up to
   ``consistency_positions`` positions with Merkle proofs, and each token must be
   the keyed choice of what was committed (:mod:`meshcore_sdk.proof.consistency`).
   A receipt that fails the first checks earns nothing; one whose records fail
   the sampler check is judged FLAG, like a failed audit.
2. **Credit**: the node's standing turns the tokens served into escrow.
3. **Lottery**: ``HMAC(epoch secret, job id) < rate``, the rate from the node's
   standing (or ``audit_rate``).  Shadow jobs are always audited.
4. **Audit**: a trusted node other than the worker, holding the model, gets the
   job blind (no worker id): Tier A (exact replay) when it shares the worker's
   build class and the draw says so, else Tier B.  Its scores, judged against the
   calibration table (:mod:`~meshcore_router.audits.verdict`), go into the ledger
   as a transcript and into the node's standing, whose actions (second opinion,
   routing weight, freeze, ban) the service carries out.

Every consequence is a ledger entry, appended (durably) before it takes effect;
a restarted router folds the ledger back into the standings
(:meth:`AuditService.restore`).  Nothing here blocks a client: receipts are
checked after the answer was delivered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from random import Random
from typing import Any, Final

from pydantic import ValidationError

from meshcore_router.audits.calibration import CalibrationTable
from meshcore_router.audits.config import AuditConfig
from meshcore_router.audits.ledger import Entry, EntryKind, EntryRejected, Ledger, NewEntry, audit_entry, entries_for
from meshcore_router.audits.reputation import (
    Action,
    AuditJudged,
    Ban,
    Event,
    JobServed,
    NodeJoined,
    ReputationBook,
    RequestSecondAudit,
    Standing,
)
from meshcore_router.audits.verdict import Outcome, Verdict, judge
from meshcore_router.links import NodeLink
from meshcore_sdk.proof.build import build_class
from meshcore_sdk.proof.consistency import check_consistency, check_termination
from meshcore_sdk.proof.lottery import EpochClock, commitment, epoch_secret, selected
from meshcore_sdk.proof.merkle import verify_inclusion
from meshcore_sdk.proof.receipt import ReceiptBody, SignedReceipt, verify_receipt
from meshcore_sdk.proof.records import TokenRecord, decode_record
from meshcore_sdk.proof.report import AuditScores, AuditTier
from meshcore_sdk.proof.sampler import job_key
from meshcore_sdk.protocol import AuditFrame, GenerateFrame, ReceiptFrame, RevealFrame
from meshcore_sdk.protocol.errors import MeshError, ProofError, ReceiptInvalid, RecordInvalid

__all__ = ["AuditService", "AuditorInfo"]

logger = logging.getLogger(__name__)

REVEAL_PAGE: Final = 256
"""Positions asked per ``reveal``: a page of records and Merkle proofs stays far below the frame cap."""


@dataclass(frozen=True, slots=True)
class _Job:
    node_id: str
    frame: GenerateFrame
    model_sha256: str
    dispatched_at: float  # unix seconds
    shadow: bool


@dataclass(frozen=True, slots=True)
class _Checked:
    """A receipt that passed the free checks, with every record it commits to, for audits."""

    node_id: str
    job: _Job
    body: ReceiptBody
    records: tuple[str, ...]  # base64, positions first_record..


@dataclass(frozen=True, slots=True)
class AuditorInfo:
    """A trusted node that can audit now: its id, its build class and the models it holds."""

    node_id: str
    build_class: str
    models: frozenset[str]


class AuditService:
    """See the module docstring.

    Args:
        config: the audit settings.
        ledger: the open ledger (the service appends; it never closes it).
        book: the nodes' standings (pure), already restored from the ledger.
        calibration: the thresholds audits are judged by.
        link_of: a connected node's control link, or None.
        ready_nodes: the READY nodes connected now, with the model hashes each holds.
        weight_format_of: the weight format of a model, as its nodes report it.
        wall_clock: unix seconds.
        rng: picks auditors, tiers and the positions of free checks.
    """

    def __init__(
        self,
        config: AuditConfig,
        *,
        ledger: Ledger,
        book: ReputationBook,
        calibration: CalibrationTable,
        link_of: Callable[[str], NodeLink | None],
        ready_nodes: Callable[[], Iterable[tuple[str, frozenset[str]]]],
        weight_format_of: Callable[[str], str | None],
        wall_clock: Callable[[], float],
        rng: Random | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.book = book
        self._calibration = calibration
        self._link_of = link_of
        self._ready_nodes = ready_nodes
        self._weight_format_of = weight_format_of
        self._wall_clock = wall_clock
        self._rng = rng or Random(secrets.randbits(64))
        self._epochs = EpochClock(config.epoch_s, config.reveal_grace_s)
        self._master = ledger.master_secret(lambda: secrets.token_bytes(32))
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._keys: dict[str, str] = {}
        self._builds: dict[str, str] = {}
        self._checked: OrderedDict[str, _Checked] = OrderedDict()  # audited jobs, for second opinions
        self._inbox: asyncio.Queue[tuple[str, ReceiptFrame]] = asyncio.Queue()
        self._slots = asyncio.Semaphore(config.max_concurrent_checks)
        self.idle = asyncio.Event()
        self.idle.set()
        self._busy = 0
        self._tasks: asyncio.TaskGroup | None = None
        self._auditor_slots: dict[str, asyncio.Semaphore] = {}

    # --- what the router tells the service ------------------------------------------------

    def node_registered(self, node_id: str, public_key: str | None, build_id: str | None) -> None:
        """A node registered (again): the key its receipts must verify with, and its build."""
        if public_key is not None:
            self._keys[node_id] = public_key
        self._builds[node_id] = build_class(build_id or "")

    def dispatched(self, node_id: str, frame: GenerateFrame, *, shadow: bool = False) -> None:
        """A job went to a node; its receipt is due."""
        if not self.config.enabled:
            return
        model = frame.model.removeprefix("sha256:")
        self._jobs[frame.request_id] = _Job(node_id, frame, model, self._wall_clock(), shadow)
        while len(self._jobs) > self.config.max_pending_jobs:
            self._jobs.popitem(last=False)

    def mark_shadow(self, job_id: str) -> None:
        """The job is a shadow prompt: audit it whatever the lottery says."""
        job = self._jobs.get(job_id)
        if job is not None:
            self._jobs[job_id] = dataclasses.replace(job, shadow=True)

    def wants_shadows(self, node_id: str) -> bool:
        """Whether the node should get shadow prompts: on probation (or unknown), or in an escalation's burst."""
        trusted = node_id in self.config.trusted_auditors
        return not trusted and self.book.standing(node_id) in (Standing.PROBATION, Standing.ESCALATED)

    def receipt_arrived(self, node_id: str, frame: ReceiptFrame) -> None:
        """A node sent a receipt (called from its link's reader; never blocks)."""
        if self.config.enabled:
            self.idle.clear()
            self._busy += 1
            self._inbox.put_nowait((node_id, frame))

    def auditors(self) -> list[AuditorInfo]:
        """The trusted nodes that are READY now."""
        trusted = self.config.trusted_auditors
        return [
            AuditorInfo(node_id, self._builds.get(node_id, "unknown"), models)
            for node_id, models in self._ready_nodes()
            if node_id in trusted
        ]

    def routing_weight(self, node_id: str) -> float:
        """The node's share of traffic from its standing (0: slashed, never routed to)."""
        return self.book.routing_weight(node_id)

    def epochs(self) -> list[dict[str, Any]]:
        """The lottery's epochs so far: each commitment, and each secret once revealed."""
        now = self._wall_clock()
        current = self._epochs.index_at(now)
        shown = []
        for index in range(max(0, current - 24), current + 1):
            secret = epoch_secret(self._master, index)
            revealed = self._epochs.revealed(index, now)
            shown.append(
                {"index": index, "commitment": commitment(secret), "secret": secret.hex() if revealed else None}
            )
        return shown

    # --- the driver -----------------------------------------------------------------------

    async def run(self) -> None:
        """Check receipts as they arrive, forever."""
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            while True:
                node_id, frame = await self._inbox.get()
                await self._slots.acquire()
                tasks.create_task(self._check_one(node_id, frame))

    async def _check_one(self, node_id: str, frame: ReceiptFrame) -> None:
        try:
            await self._check(node_id, frame)
        except MeshError as exc:
            logger.warning("receipt %s from %s: %s", frame.request_id, node_id, exc)
        except Exception:  # a bug here must cost this receipt only, never the audits of the whole mesh
            logger.exception("checking receipt %s from %s failed", frame.request_id, node_id)
        finally:
            self._slots.release()
            self._busy -= 1
            if self._busy == 0:
                self.idle.set()

    async def _check(self, node_id: str, frame: ReceiptFrame) -> None:
        job = self._jobs.pop(frame.request_id, None)
        if job is None or job.node_id != node_id:
            raise ReceiptInvalid(f"no job {frame.request_id} was sent to {node_id}")
        now = self._wall_clock()
        epoch = self._epochs.index_at(job.dispatched_at)
        try:
            body = self._verify(node_id, job, frame, epoch, now)
        except ProofError as exc:
            await self._append(NewEntry(EntryKind.RECEIPT, now, node_id, job.frame.request_id, 0, _rejected(exc)))
            raise
        records = await self._free_check(node_id, job, body)
        if records is None:
            return
        await self._append(
            NewEntry(EntryKind.RECEIPT, now, node_id, body.job_id, 0, {"accepted": True, "tokens": body.n_records})
        )
        await self._event(JobServed(node_id, body.job_id, tokens=body.n_records), now=now)
        rate = self.config.audit_rate if self.config.audit_rate is not None else self.book.audit_rate(node_id)
        if job.shadow or selected(epoch_secret(self._master, epoch), body.job_id, rate):
            if len(records) < body.n_records:  # the free check saw a sample: the auditor needs them all
                everything = await self._reveal(node_id, body, list(range(body.first_record, len(body.output_ids))))
                records = tuple(base64.b64encode(leaf).decode() for leaf, _ in everything.values())
            checked = _Checked(node_id, job, body, records)
            self._checked[body.job_id] = checked
            while len(self._checked) > self.config.max_pending_jobs:
                self._checked.popitem(last=False)
            await self._audit(checked, second_opinion=False)

    def _verify(self, node_id: str, job: _Job, frame: ReceiptFrame, epoch: int, now: float) -> ReceiptBody:
        try:
            signed = SignedReceipt.model_validate(frame.receipt)
        except ValidationError as exc:
            raise ReceiptInvalid(f"the receipt does not parse: {exc.error_count()} errors") from exc
        body = verify_receipt(signed, expected_public_key=self._keys.get(node_id))
        if body.job_id != job.frame.request_id or body.node_id != node_id:
            raise ReceiptInvalid(f"the receipt names job {body.job_id} of {body.node_id}")
        if body.model_sha256 != job.model_sha256:
            raise ReceiptInvalid(f"the receipt names model {body.model_sha256[:12]}, the job was for another")
        allowed = self.config.allowed_build_classes
        if allowed and build_class(body.build_id) not in allowed:
            raise ReceiptInvalid(f"build class {build_class(body.build_id)} is not allowed")
        self._epochs.require_in_time(epoch, now)
        return body

    # --- free checks ----------------------------------------------------------------------

    async def _free_check(self, node_id: str, job: _Job, body: ReceiptBody) -> tuple[str, ...] | None:
        """Reveal and check records; the encoded records of every position, or None when judged already."""
        positions = list(range(body.first_record, len(body.output_ids)))
        if len(positions) > self.config.consistency_positions:
            positions = sorted(self._rng.sample(positions, self.config.consistency_positions))
        revealed = await self._reveal(node_id, body, positions) if positions else {}
        committed = {position: record for position, (_, record) in revealed.items()}
        report = check_consistency(body, committed, job_key(body.job_id, body.sampler.seed))
        ending = check_termination(body, eos_ids=())
        if report.ok and ending.ok:
            return tuple(base64.b64encode(leaf).decode() for leaf, _ in revealed.values())
        why = f"sampler check: {len(report.inconsistent)} of {report.checked} tokens are not the committed choice"
        verdict = Verdict(outcome=Outcome.FLAG, reasons=(why,) if not report.ok else ("termination rules broken",))
        await self._judged(
            node_id, body.job_id, "free-check", AuditScores(tier=AuditTier.PREFILL, positions=0), verdict
        )
        return None

    async def _reveal(
        self, node_id: str, body: ReceiptBody, positions: list[int]
    ) -> dict[int, tuple[bytes, TokenRecord]]:
        """The records of ``positions``, each checked against the receipt's Merkle root: (leaf, decoded).

        Asked in pages of :data:`REVEAL_PAGE` positions, so that no answer outgrows a frame.
        """
        records: dict[int, tuple[bytes, TokenRecord]] = {}
        for start in range(0, len(positions), REVEAL_PAGE):
            records |= await self._reveal_page(node_id, body, positions[start : start + REVEAL_PAGE])
        return records

    async def _reveal_page(
        self, node_id: str, body: ReceiptBody, positions: list[int]
    ) -> dict[int, tuple[bytes, TokenRecord]]:
        link = self._link_of(node_id)
        if link is None:
            raise RecordInvalid(f"{node_id} left before revealing the records of {body.job_id}")
        answer = await link.reveal(
            RevealFrame(request_id=body.job_id, positions=positions), timeout_s=self.config.reveal_timeout_s
        )
        if answer.positions != positions:
            raise RecordInvalid(f"{node_id} revealed other positions than those asked")
        root = bytes.fromhex(body.merkle_root)
        records: dict[int, tuple[bytes, TokenRecord]] = {}
        for position, text, proof in zip(answer.positions, answer.records, answer.proofs, strict=True):
            try:
                leaf = base64.b64decode(text, validate=True)
            except binascii.Error as exc:
                raise RecordInvalid(f"record {position} of {body.job_id} is not base64") from exc
            path = [bytes.fromhex(node) for node in proof]
            if not verify_inclusion(leaf, position - body.first_record, body.n_records, path, root):
                raise RecordInvalid(f"record {position} of {body.job_id} is not under the receipt's Merkle root")
            records[position] = (leaf, decode_record(leaf))
        return records

    # --- audits ---------------------------------------------------------------------------

    async def _audit(self, checked: _Checked, *, second_opinion: bool, exclude: frozenset[str] = frozenset()) -> None:
        auditor = self._pick_auditor(checked, exclude | {checked.node_id})
        if auditor is None:
            logger.warning("no trusted auditor can audit %s now", checked.body.job_id)
            return
        link = self._link_of(auditor.node_id)
        if link is None:
            return
        worker_class = build_class(checked.body.build_id)
        replay = auditor.build_class == worker_class and self._rng.random() < self.config.tier_a_share
        job = checked.body.model_dump(mode="json", exclude={"node_id"})
        frame = AuditFrame(
            audit_id=f"a-{secrets.token_hex(8)}",
            tier="A" if replay else "B",
            generate=checked.job.frame,
            job=job,
            records=list(checked.records),
        )
        async with self._auditor_slots.setdefault(auditor.node_id, asyncio.Semaphore(1)):  # one at a time each
            answer = await link.audit(frame, timeout_s=self.config.audit_timeout_s)
        scores = AuditScores.model_validate(answer.scores)
        if answer.prompt_sha256 != checked.body.prompt_sha256:
            verdict = Verdict(outcome=Outcome.FLAG, reasons=("the worker's prompt differs from the request's",))
            await self._judged(
                checked.node_id, checked.body.job_id, auditor.node_id, scores, verdict, second_opinion=second_opinion
            )
            return
        thresholds = self._calibration.lookup(
            checked.body.model_sha256,
            self._weight_format_of(checked.body.model_sha256) or "unknown",
            worker_class,
            auditor.build_class,
        )
        verdict = judge(scores, thresholds)
        await self._append(
            audit_entry(
                at=self._wall_clock(),
                node_id=checked.node_id,
                job_id=checked.body.job_id,
                auditor_id=auditor.node_id,
                scores=scores,
                thresholds=thresholds,
                verdict=verdict,
                second_opinion=second_opinion,
            )
        )
        await self._judged(
            checked.node_id,
            checked.body.job_id,
            auditor.node_id,
            scores,
            verdict,
            second_opinion=second_opinion,
            logged=True,
        )

    def _pick_auditor(self, checked: _Checked, exclude: frozenset[str]) -> AuditorInfo | None:
        pool = [
            info for info in self.auditors() if info.node_id not in exclude and checked.body.model_sha256 in info.models
        ]
        return self._rng.choice(pool) if pool else None

    async def _judged(
        self,
        node_id: str,
        job_id: str,
        auditor_id: str,
        scores: AuditScores,
        verdict: Verdict,
        *,
        second_opinion: bool = False,
        logged: bool = False,
    ) -> None:
        now = self._wall_clock()
        if not logged:
            payload = {
                "auditor_id": auditor_id,
                "second_opinion": second_opinion,
                "scores": scores.model_dump(mode="json"),
                "verdict": verdict.model_dump(mode="json"),
            }
            await self._append(NewEntry(EntryKind.AUDIT, now, node_id, job_id, 0, payload))
        logger.info("audit of %s on %s: %s %s", job_id, node_id, verdict.outcome, "; ".join(verdict.reasons))
        event = AuditJudged(node_id, job_id, verdict, scores.tier, auditor_id, second_opinion=second_opinion)
        await self._event(event, now=now)

    # --- consequences ---------------------------------------------------------------------

    async def restore(self) -> int:
        """Fold the ledger back into the standings after a restart; return the events replayed.

        Every receipt and audit entry is an event again, at its own time, and every
        action it gives is applied again: the ledger's idempotency keys make the ones
        that landed before the restart no-ops, and the ones that did not land now do.
        """
        replayed = 0
        for entry in list(await asyncio.to_thread(lambda: list(self.ledger.entries()))):
            event = _event_of(entry)
            if event is None:
                continue
            await self._apply(self.book.handle_timer(now=entry.at), now=entry.at, live=False)
            if entry.node_id not in self.book:
                await self._apply(self.book.handle(NodeJoined(event.node_id), now=entry.at), now=entry.at, live=False)
            await self._apply(self.book.handle(event, now=entry.at), now=entry.at, live=False)
            replayed += 1
        return replayed

    async def run_timers(self) -> None:
        """Carry out the standings' timers (escrow maturing, escalations timing out), forever."""
        while True:
            deadline = self.book.get_timer()
            delay = 60.0 if deadline is None else min(60.0, max(0.0, deadline - self._wall_clock()))
            await asyncio.sleep(delay)
            now = self._wall_clock()
            await self._apply(self.book.handle_timer(now=now), now=now)

    async def _event(self, event: Event, *, now: float) -> None:
        if event.node_id not in self.book:
            await self._apply(self.book.handle(NodeJoined(event.node_id), now=now), now=now)
        await self._apply(self.book.handle(event, now=now), now=now)

    async def _apply(self, actions: Iterable[Action], *, now: float, live: bool = True) -> None:
        """Write the actions' ledger entries and start second audits (when live).

        Replaying (``live=False``) writes only entries with an idempotency key: those the
        ledger can tell it already holds.  A standing change with no job behind it (a timer's)
        was written live, if it happened before the restart.
        """
        actions = list(actions)
        for entry in entries_for(actions, at=now):
            if entry.idempotency_key is None and entry.job_id is not None:
                entry = dataclasses.replace(entry, idempotency_key=_standing_key(entry))
            if entry.idempotency_key is None and not live:
                continue
            try:
                await self._append(entry)
            except EntryRejected as exc:
                logger.warning("ledger refused %s for %s: %s", entry.kind, entry.node_id, exc)
        for action in actions:
            if isinstance(action, Ban):
                logger.warning("node %s is slashed and banned from routing", action.node_id)
            if live and isinstance(action, RequestSecondAudit):
                checked = self._checked.get(action.job_id)
                if checked is not None and self._tasks is not None:
                    second = self._audit(checked, second_opinion=True, exclude=frozenset(action.exclude))
                    self._tasks.create_task(self._guarded(second, action.job_id))

    async def _guarded(self, work: Coroutine[Any, Any, None], job_id: str) -> None:
        try:
            await work
        except MeshError as exc:
            logger.warning("second audit of %s: %s", job_id, exc)
        except Exception:  # as in _check_one: one audit's bug must not stop the others
            logger.exception("second audit of %s failed", job_id)

    async def _append(self, entry: NewEntry) -> None:
        await asyncio.to_thread(self.ledger.append, entry)


def _standing_key(entry: NewEntry) -> str:
    payload = entry.payload
    return f"standing:{entry.node_id}:{entry.job_id}:{payload.get('standing')}:{payload.get('reason')}"


def _event_of(entry: Entry) -> Event | None:
    """The reputation event a receipt or audit entry records (None for other entries)."""
    payload = entry.payload
    if entry.node_id is None or entry.job_id is None:
        return None
    if entry.kind is EntryKind.RECEIPT and payload.get("accepted"):
        return JobServed(entry.node_id, entry.job_id, tokens=int(payload["tokens"]))
    if entry.kind is EntryKind.AUDIT:
        return AuditJudged(
            entry.node_id,
            entry.job_id,
            Verdict.model_validate(payload["verdict"]),
            tier=AuditTier(payload["scores"]["tier"]),
            auditor_id=payload["auditor_id"],
            second_opinion=bool(payload.get("second_opinion")),
        )
    return None


def _rejected(exc: MeshError) -> dict[str, Any]:
    return {"accepted": False, "code": exc.code.value, "why": str(exc)}
