"""The swarm's leader election and failover, as a pure state machine.

Theory of operation
-------------------
One prompt goes to several workers at once.  Each answers with tokens
numbered by ``seq``.  The first worker to send a valid token at position 0
becomes the *leader* (term 1) and its tokens are delivered to the application;
every other worker is told to *pause*: it keeps the prompt (and whatever it
generated) in its KV cache and stops computing, so it can take over later.

The machine watches the gaps between the leader's tokens.  It fails over when
the leader's link closes, when it sends an error, or when a gap exceeds the
adaptive threshold ``max(min_gap_s, gap_multiplier x EWMA gap, p99 gap +
p99_margin_s)``.  Failing over sends the best follower ``resume {from_seq,
token_ids}`` with every id delivered so far; the follower prefills what it
lacks and continues at ``from_seq``.  Until the follower's first token arrives
the old leader may still deliver (hedged failover: a leader that merely
stuttered costs nothing); whichever delivers the next position first leads,
and the other is cancelled.  With no follower left the machine asks for a fresh
worker and resumes it from the delivered ids (a cold catch-up), at most
``max_cold_catchups`` times, then fails with every worker's cause.

Exactly once: a position is delivered only when it is the next one
(``seq == len(delivered)``), only from the leader or the failover candidate,
and never again.  Tokens of cancelled or lost workers are dropped.

Once the leader has delivered ``release_after_tokens`` tokens since it took
over, all followers but the ``keep_warm_followers`` best are cancelled, so a
long generation does not pin memory on every worker.  From then on the warm
followers are sent the delivered ids every ``catch_up_every_tokens`` tokens
(a ``resume`` with ``hold``: prefill, no token, paused again), so that a later
failover prefills only the last few ids and the stream barely stutters.  The best follower is the
one holding the most of the answer, then the one that was fastest to its first
token, then the lowest worker id.

=============  =========================  ===========================  ==================================
phase          input                      condition                    actions
=============  =========================  ===========================  ==================================
RACING         token seq 0 from w         w is racing                  LeaderElected(w), Deliver, Pause(rest)
RACING         worker lost                others still racing          -
RACING         worker lost                none left                    Fail
RACING         timer                      first-token deadline         Cancel(all), Fail
STREAMING      token from leader          seq == next                  Deliver (release, CatchUp when due)
STREAMING      token from follower        -                            (remember what it holds)
STREAMING      leader lost / timer        a follower is left           FailoverStarted, Resume(best)
STREAMING      leader lost / timer        none left, catch-ups left    FailoverStarted, RequestWorker
STREAMING      leader lost / timer        nothing left                 Cancel(all), Fail
FAILING_OVER   next token from candidate  -                            Cancel(old), LeaderElected, Deliver
FAILING_OVER   next token from old leader -                            Cancel(candidate), Deliver
FAILING_OVER   worker added               waiting for one              Resume(new)
FAILING_OVER   fresh worker lost          waiting for one              as "leader lost" above
FAILING_OVER   candidate lost / timer     -                            as "leader lost" above
FAILING_OVER   timer                      waiting for a fresh one      another catch-up if left, else Fail
any live       leader finished            -                            Cancel(others), Finish
FINISHED/      anything                   -                            nothing
FAILED
=============  =========================  ===========================  ==================================

The machine never reads a clock: every input comes with ``now``, and
:meth:`SwarmMachine.get_timer` says when :meth:`SwarmMachine.handle_timer`
is due.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from meshcore_sdk.protocol.errors import LocalProtocolError

__all__ = [
    "Cancel",
    "CatchUp",
    "Deliver",
    "Fail",
    "FailoverStarted",
    "Finish",
    "LeaderElected",
    "Pause",
    "Phase",
    "RequestWorker",
    "Resume",
    "SwarmAction",
    "SwarmConfig",
    "SwarmInput",
    "SwarmMachine",
    "TokenReceived",
    "WorkerAdded",
    "WorkerFinished",
    "WorkerLost",
]


@dataclass(frozen=True, slots=True)
class SwarmConfig:
    """How a swarm elects, watches and replaces its leader.

    Attributes:
        first_token_timeout_s: how long the race for the first token may take, in seconds.
        min_gap_s: the smallest inter-token gap that counts as a stall, in seconds.
        gap_multiplier: a gap this many times the EWMA gap counts as a stall.
        p99_margin_s: a gap this much over the p99 of recent gaps counts as a stall, in seconds.
        ewma_alpha: weight of the newest gap in the EWMA.
        gap_window: how many recent gaps the p99 is taken over.
        failover_timeout_s: how long a resumed follower may take to deliver, in seconds.
        release_after_tokens: tokens a leader delivers before surplus followers are released.
        keep_warm_followers: followers kept paused once the leader is healthy.
        max_cold_catchups: fresh workers the swarm may ask for when no follower is left.
        catch_up_every_tokens: once surplus followers are released, the warm ones are sent the
            delivered ids whenever they lack this many (0: never), so a failover prefills little.
    """

    first_token_timeout_s: float = 30.0
    min_gap_s: float = 0.05
    gap_multiplier: float = 3.0
    p99_margin_s: float = 0.02
    ewma_alpha: float = 0.2
    gap_window: int = 128
    failover_timeout_s: float = 10.0
    release_after_tokens: int = 16
    keep_warm_followers: int = 1
    max_cold_catchups: int = 1
    catch_up_every_tokens: int = 8


class Phase(enum.Enum):
    """Where the swarm stands."""

    RACING = "racing"
    STREAMING = "streaming"
    FAILING_OVER = "failing_over"
    FINISHED = "finished"
    FAILED = "failed"


class _Role(enum.Enum):
    RACING = "racing"
    LEADER = "leader"
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    GONE = "gone"


# --- inputs (what happened) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenReceived:
    """``worker`` sent the token at position ``seq``."""

    worker: str
    seq: int
    token_id: int
    text_bytes: bytes = b""


@dataclass(frozen=True, slots=True)
class WorkerFinished:
    """``worker`` sent ``done`` after ``completion_tokens`` positions."""

    worker: str
    finish_reason: str
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class WorkerLost:
    """``worker`` can serve no more: its link closed, it sent an error, or it pushed back."""

    worker: str
    cause: str


@dataclass(frozen=True, slots=True)
class WorkerAdded:
    """A fresh worker (asked for with :class:`RequestWorker`) is connected and holds the prompt."""

    worker: str


SwarmInput = TokenReceived | WorkerFinished | WorkerLost | WorkerAdded


# --- actions (what to do) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deliver:
    """Give the application the token at ``seq``, produced by ``worker``."""

    worker: str
    seq: int
    token_id: int
    text_bytes: bytes


@dataclass(frozen=True, slots=True)
class LeaderElected:
    """``worker`` leads from now on, in leadership ``term``."""

    worker: str
    term: int


@dataclass(frozen=True, slots=True)
class Pause:
    """Tell ``worker`` to stop computing and keep its state."""

    worker: str


@dataclass(frozen=True, slots=True)
class Resume:
    """Tell ``worker`` to continue at ``from_seq`` after taking ``token_ids``, the delivered ids it lacks.

    They are the ids of positions ``from_seq - len(token_ids)`` on (``docs/protocol.md`` §3.2).
    """

    worker: str
    from_seq: int
    token_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Tell paused ``worker`` to take ``token_ids`` (positions up to ``from_seq``) into its cache and stay paused."""

    worker: str
    from_seq: int
    token_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Cancel:
    """Tell ``worker`` to stop and free its state; ``reason`` says why (not compared)."""

    worker: str
    reason: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class RequestWorker:
    """Ask the router for one more worker for this request (a cold catch-up)."""


@dataclass(frozen=True, slots=True)
class FailoverStarted:
    """The leader ``from_worker`` failed (``reason``); ``to_worker`` (None: a fresh one) takes over."""

    from_worker: str
    to_worker: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Finish:
    """The answer is complete."""

    finish_reason: str


@dataclass(frozen=True, slots=True)
class Fail:
    """No worker can finish the answer; ``causes`` says why, per worker."""

    causes: tuple[tuple[str, str], ...]


SwarmAction = (
    Deliver | LeaderElected | Pause | Resume | CatchUp | Cancel | RequestWorker | FailoverStarted | Finish | Fail
)


@dataclass
class _Worker:
    name: str
    order: int
    role: _Role = _Role.RACING
    token_ids: list[int] = field(default_factory=list)
    first_token_at: float | None = None
    cause: str | None = None

    def holds(self, delivered: Sequence[int]) -> int:
        """How many delivered positions this worker already holds, in order."""
        count = 0
        for mine, theirs in zip(self.token_ids, delivered, strict=False):
            if mine != theirs:
                break
            count += 1
        return count


class _GapStats:
    """The recent inter-token gaps of the leader, and the stall threshold they imply."""

    def __init__(self, config: SwarmConfig) -> None:
        self._config = config
        self._ewma: float | None = None
        self._recent: deque[float] = deque(maxlen=config.gap_window)

    def add(self, gap_s: float) -> None:
        alpha = self._config.ewma_alpha
        self._ewma = gap_s if self._ewma is None else alpha * gap_s + (1 - alpha) * self._ewma
        self._recent.append(gap_s)

    def threshold_s(self) -> float:
        config = self._config
        if self._ewma is None:
            return config.first_token_timeout_s  # no gap seen yet: the second token may take a prefill's time
        ordered = sorted(self._recent)
        p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
        return max(config.min_gap_s, config.gap_multiplier * self._ewma, p99 + config.p99_margin_s)


class SwarmMachine:
    """Elects a leader among ``workers`` and keeps one smooth stream going.

    Args:
        workers: the workers the prompt went to, all racing.
        config: thresholds and budgets.
        now: the time the prompt was sent, in seconds (any monotonic clock).
    """

    def __init__(self, workers: Iterable[str], config: SwarmConfig, *, now: float) -> None:
        names = list(dict.fromkeys(workers))
        if not names:
            raise LocalProtocolError("a swarm needs at least one worker")
        self._config = config
        self._workers = {name: _Worker(name, order) for order, name in enumerate(names)}
        self._actions: list[SwarmAction] = []
        self._gaps = _GapStats(config)
        self._started_at = now
        self._last_token_at = now
        self._failover_at = now
        self._catchups_left = config.max_cold_catchups
        self._waiting_for_worker = False
        self._fresh_lost: list[tuple[str, str]] = []  # fresh workers lost before they were added
        self._term_tokens = 0
        self._released = False
        self.delivered: list[int] = []
        """The token ids delivered so far, position by position."""
        self.phase = Phase.RACING
        self.leader: str | None = None
        self.candidate: str | None = None
        self.term = 0

    # --- the public face ------------------------------------------------------------------

    def receive(self, event: SwarmInput, *, now: float) -> None:
        """Take one input."""
        if self.phase in (Phase.FINISHED, Phase.FAILED):
            return
        match event:
            case TokenReceived():
                self._on_token(event, now)
            case WorkerFinished():
                self._on_finished(event)
            case WorkerLost():
                self._on_lost(event.worker, event.cause, now)
            case WorkerAdded():
                self._on_added(event.worker, now)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is next due (None once the swarm has ended)."""
        match self.phase:
            case Phase.RACING:
                return self._started_at + self._config.first_token_timeout_s
            case Phase.STREAMING:
                return self._last_token_at + self._gaps.threshold_s()
            case Phase.FAILING_OVER:
                return self._failover_at + self._config.failover_timeout_s
            case _:
                return None

    def handle_timer(self, *, now: float) -> None:
        """Act on a deadline that has passed."""
        deadline = self.get_timer()
        if deadline is None or now < deadline:
            return
        if self.phase is Phase.RACING:
            for worker in self._live():
                self._drop(worker, "no first token in time")
            self._fail()
        elif self.phase is Phase.STREAMING:
            assert self.leader is not None
            self._fail_over(f"stalled: no token for {now - self._last_token_at:.3f} s", now)
        else:
            if self.candidate is not None:
                self._drop(self._workers[self.candidate], "did not resume in time")
                self.candidate = None
            self._fail_over("the failover did not deliver in time", now, final=True)

    def actions(self) -> list[SwarmAction]:
        """What to do now; each action is returned once."""
        actions, self._actions = self._actions, []
        return actions

    # --- inputs -----------------------------------------------------------------------------

    def _on_token(self, event: TokenReceived, now: float) -> None:
        worker = self._workers.get(event.worker)
        if worker is None or worker.role is _Role.GONE:
            return
        if event.seq < len(worker.token_ids):
            return  # sent before this worker was told to resume from further on: stale
        if event.seq > len(worker.token_ids):
            self._on_lost(worker.name, f"token at seq {event.seq}, expected {len(worker.token_ids)}", now)
            return
        worker.token_ids.append(event.token_id)
        worker.first_token_at = worker.first_token_at if worker.first_token_at is not None else now
        if self.phase is Phase.RACING and event.seq == 0:
            self._elect(worker)
            for other in self._live():
                if other is not worker:
                    other.role = _Role.FOLLOWER
                    self._actions.append(Pause(other.name))
        if event.seq == len(self.delivered) and worker.name in (self.leader, self.candidate):
            self._deliver(worker, event, now)

    def _on_finished(self, event: WorkerFinished) -> None:
        worker = self._workers.get(event.worker)
        if worker is None or worker.role is _Role.GONE:
            return
        if event.worker == self.leader and event.completion_tokens == len(self.delivered):
            for other in self._live():
                if other is not worker:
                    self._drop(other, "the answer is complete")
            worker.role = _Role.GONE
            self.phase = Phase.FINISHED
            self._actions.append(Finish(event.finish_reason))
            return
        self._drop(worker, f"finished early ({event.finish_reason})", cancel=False)

    def _on_lost(self, name: str, cause: str, now: float) -> None:
        worker = self._workers.get(name)
        if worker is None and self._waiting_for_worker:
            # The fresh worker asked for was lost before it was added (refused, never connected).
            self._waiting_for_worker = False
            self._fresh_lost.append((name, cause))
            self._fail_over(f"the fresh worker was lost: {cause}", now)
            return
        if worker is None or worker.role is _Role.GONE:
            return
        self._drop(worker, cause, cancel=False)
        if self.phase is Phase.RACING:
            if not self._live():
                self._fail()
        elif name == self.candidate:
            self.candidate = None
            self._fail_over(cause, now)
        elif name == self.leader and self.phase is Phase.STREAMING:
            self._fail_over(cause, now)

    def _on_added(self, name: str, now: float) -> None:
        if not self._waiting_for_worker or name in self._workers:
            self._actions.append(Cancel(name, "not needed any more"))
            return
        self._waiting_for_worker = False
        worker = _Worker(name, len(self._workers), role=_Role.CANDIDATE)
        self._workers[name] = worker
        self.candidate = name
        self._failover_at = now
        self._resume(worker)

    # --- transitions ------------------------------------------------------------------------

    def _elect(self, worker: _Worker) -> None:
        self.term += 1
        self.leader = worker.name
        self.candidate = None
        worker.role = _Role.LEADER
        self.phase = Phase.STREAMING
        self._term_tokens = 0
        self._actions.append(LeaderElected(worker.name, self.term))

    def _deliver(self, worker: _Worker, event: TokenReceived, now: float) -> None:
        if worker.name == self.candidate:
            old = self._workers[self.leader] if self.leader is not None else None
            if old is not None and old.role is not _Role.GONE:
                self._drop(old, "replaced by a faster follower")
            self._elect(worker)
        elif self.candidate is not None:
            self._drop(self._workers[self.candidate], "the leader recovered first")
            self.candidate = None
            self.phase = Phase.STREAMING
        if self.delivered:
            self._gaps.add(now - self._last_token_at)
        self._last_token_at = now
        self.delivered.append(event.token_id)
        self._term_tokens += 1
        self._actions.append(Deliver(worker.name, event.seq, event.token_id, event.text_bytes))
        if not self._released and self._term_tokens >= self._config.release_after_tokens:
            self._release_followers()
        if self._released:
            self._catch_up_followers()

    def _fail_over(self, reason: str, now: float, *, final: bool = False) -> None:
        """Find someone to continue: the best follower, else a fresh worker, else the old leader, else give up.

        ``final`` says the failover deadline passed: a stalled old leader gets no more time.
        """
        self.phase = Phase.FAILING_OVER
        self._failover_at = now
        follower = self._best_follower()
        previous = self.leader or "?"
        leader = self._workers[self.leader] if self.leader is not None else None
        leader_alive = leader is not None and leader.role is not _Role.GONE
        if follower is not None:
            follower.role = _Role.CANDIDATE
            self.candidate = follower.name
            self._actions.append(FailoverStarted(previous, follower.name, reason))
            self._resume(follower)
        elif self._waiting_for_worker and not final:
            return
        elif self._catchups_left > 0:
            if self._waiting_for_worker:  # the last one did not come in time
                self._fresh_lost.append(("(fresh worker)", "did not come in time"))
            self._catchups_left -= 1
            self._waiting_for_worker = True
            self._actions.append(FailoverStarted(previous, None, reason))
            self._actions.append(RequestWorker())
        elif leader_alive and not final:
            return  # nobody else is left: the stalled leader has until the failover deadline
        else:
            if self._waiting_for_worker:
                self._waiting_for_worker = False
                self._fresh_lost.append(("(fresh worker)", "did not come in time"))
            self._fail()

    def _resume(self, worker: _Worker) -> None:
        held = worker.holds(self.delivered)
        worker.token_ids = list(self.delivered)
        self._actions.append(Resume(worker.name, len(self.delivered), tuple(self.delivered[held:])))

    def _release_followers(self) -> None:
        self._released = True
        followers = sorted(self._followers(), key=self._rank)
        for surplus in followers[self._config.keep_warm_followers :]:
            self._drop(surplus, "released: the leader is healthy")

    def _catch_up_followers(self) -> None:
        every = self._config.catch_up_every_tokens
        for follower in self._followers():
            held = follower.holds(self.delivered)
            if every and len(self.delivered) - held >= every:
                follower.token_ids = list(self.delivered)
                self._actions.append(CatchUp(follower.name, len(self.delivered), tuple(self.delivered[held:])))

    def _drop(self, worker: _Worker, cause: str, *, cancel: bool = True) -> None:
        if worker.role is _Role.GONE:
            return
        worker.role = _Role.GONE
        worker.cause = worker.cause or cause
        if cancel:
            self._actions.append(Cancel(worker.name, cause))

    def _fail(self) -> None:
        for worker in self._live():
            self._drop(worker, "the swarm gave up")
        self.phase = Phase.FAILED
        causes = tuple((w.name, w.cause or "unknown") for w in self._workers.values()) + tuple(self._fresh_lost)
        self._actions.append(Fail(causes))

    # --- queries ----------------------------------------------------------------------------

    def _live(self) -> list[_Worker]:
        return [worker for worker in self._workers.values() if worker.role is not _Role.GONE]

    def _followers(self) -> list[_Worker]:
        return [worker for worker in self._workers.values() if worker.role is _Role.FOLLOWER]

    def _best_follower(self) -> _Worker | None:
        followers = self._followers()
        return min(followers, key=self._rank) if followers else None

    def _rank(self, worker: _Worker) -> tuple[int, float, int]:
        """Lower is better: holds more of the answer, then was faster to its first token, then listed first."""
        first = worker.first_token_at if worker.first_token_at is not None else math.inf
        return (-worker.holds(self.delivered), first, worker.order)
