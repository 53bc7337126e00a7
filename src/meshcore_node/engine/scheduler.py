"""Continuous batching: which sequences the next ``llama_decode`` feeds, and what it costs.

Theory of operation
-------------------
The engine holds one llama.cpp context with ``n_slots`` sequence ids and a
KV cache of ``n_cells`` tokens, shared by all of them.  A *sequence* (one
request) knows ``known`` token ids (prompt plus generated tokens) of which the
first ``cached`` are in the KV cache.  Feeding ``known - cached`` pending ids
yields the logits of the next position, from which the engine samples one more
token (``known += 1``).  A sequence that is decoding therefore has one pending
id per step; one that is prefilling (a new prompt, or the ids a ``resume``
brought) has many.

Each call to :meth:`Scheduler.next_step` returns a :class:`Step`: first the
slot *actions* the driver performs (assign, restore, evict, trim, release),
then the *feeds*: slices of pending ids, one per sequence, to decode together
in one batch.  The step never holds more than ``max_step_tokens`` tokens.
Sequences left unfed by earlier steps go first, then decoding sequences (one
token each), then prefills in chunks, oldest admission first, until the cap.
A sequence that was not fed moves ahead of every sequence that was, so each
active sequence with pending ids is fed within as many steps as there are
active sequences: none starves.

A resident sequence holds a slot and ``reserve`` cells (its prompt plus its
token limit) whether it computes or not, so running sequences never run out
of cache and never need to be evicted.  New admissions wait in FIFO order
until a slot and their cells are free.  When the head of the queue does not
fit, paused sequences are evicted, longest paused first, but only if that
makes it fit: the driver saves their KV (``llama_state_seq_get_data``) and
restores it when they are resumed and admitted again.  An active sequence is
never evicted.

Transition table (``-`` means the sequence is gone)
----------------------------------------------------

===========  =========================  ===========  ====================================
state        event                      next state   actions in the next step
===========  =========================  ===========  ====================================
(none)       admitted                   WAITING
WAITING      room at next_step          ACTIVE       Assign (new) or Restore (was evicted)
WAITING      paused                     PARKED
ACTIVE       paused                     PAUSED
ACTIVE       token sampled              ACTIVE       (its next token is fed)
PAUSED       resumed                    ACTIVE       Trim, when the resume cut its cache
PAUSED       head of queue needs room   PARKED       Evict (the driver saves its KV)
PARKED       resumed                    WAITING
any          cancelled / finished       -            Release (resident) or Discard (saved)
===========  =========================  ===========  ====================================

The scheduler is pure: no llama.cpp, no clock, no threads.  The driver tells
it what happened and runs the steps it returns, in order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Assign",
    "Discard",
    "Evict",
    "Feed",
    "Release",
    "Restore",
    "Scheduler",
    "SchedulerConfig",
    "SeqState",
    "SlotAction",
    "Step",
    "Trim",
]


class SeqState(enum.Enum):
    """Where a sequence is in its life (see the transition table)."""

    WAITING = "waiting"  # wants to compute; holds no slot yet
    ACTIVE = "active"  # holds a slot; computes
    PAUSED = "paused"  # holds a slot and its KV; computes nothing
    PARKED = "parked"  # paused without a slot (evicted, or paused before it ever ran)


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """The capacity the scheduler shares out.

    Attributes:
        n_cells: KV cache cells (tokens) of the context, shared by every sequence.
        n_slots: sequence ids of the context (llama.cpp's ``n_seq_max``).
        max_step_tokens: tokens in one ``llama_decode`` at most (at most the context's ``n_batch``).
    """

    n_cells: int
    n_slots: int
    max_step_tokens: int

    def __post_init__(self) -> None:
        if min(self.n_cells, self.n_slots, self.max_step_tokens) < 1:
            raise ValueError("n_cells, n_slots and max_step_tokens must be at least 1")


@dataclass(frozen=True, slots=True)
class Assign:
    """Give ``slot`` (empty) to ``seq_id``, which starts from an empty cache."""

    seq_id: str
    slot: int


@dataclass(frozen=True, slots=True)
class Restore:
    """Give ``slot`` to ``seq_id`` and load its saved KV, keeping the first ``keep`` positions."""

    seq_id: str
    slot: int
    keep: int


@dataclass(frozen=True, slots=True)
class Evict:
    """Save the KV of paused ``seq_id`` from ``slot``, then empty the slot."""

    seq_id: str
    slot: int


@dataclass(frozen=True, slots=True)
class Trim:
    """Drop the KV of ``slot`` from position ``keep`` on (a resume replaced those ids)."""

    seq_id: str
    slot: int
    keep: int


@dataclass(frozen=True, slots=True)
class Release:
    """Empty ``slot``: its sequence is gone."""

    seq_id: str
    slot: int


@dataclass(frozen=True, slots=True)
class Discard:
    """Forget the saved KV of ``seq_id``: it was evicted and is now gone."""

    seq_id: str


SlotAction = Assign | Restore | Evict | Trim | Release | Discard


@dataclass(frozen=True, slots=True)
class Feed:
    """Decode the ids at positions ``start:stop`` of ``seq_id`` into ``slot``.

    ``logits`` is true when ``stop`` reaches the last known id: the engine then
    samples the sequence's next token from this feed's last row.
    """

    seq_id: str
    slot: int
    start: int
    stop: int
    logits: bool

    @property
    def size(self) -> int:
        """Tokens this feed puts in the batch."""
        return self.stop - self.start


@dataclass(frozen=True, slots=True)
class Step:
    """What the driver does next: the slot actions in order, then one decode of the feeds."""

    actions: tuple[SlotAction, ...] = ()
    feeds: tuple[Feed, ...] = ()

    @property
    def tokens(self) -> int:
        """Tokens in this step's batch."""
        return sum(feed.size for feed in self.feeds)


@dataclass(slots=True)
class _Seq:
    seq_id: str
    known: int
    reserve: int
    order: int
    state: SeqState = SeqState.WAITING
    cached: int = 0
    slot: int | None = None
    saved: bool = False  # its KV lives outside the context, to be restored
    kv_len: int = 0  # positions actually in the slot (or in the saved copy)
    paused_at: int = 0
    starved: int = 0  # steps in a row it had pending ids and was not fed

    @property
    def pending(self) -> int:
        return self.known - self.cached


class Scheduler:
    """Shares one context between many sequences; see the module docstring.

    Sequence ids are the engine's request ids.  Events for unknown ids raise
    ``KeyError``; events that make no sense in a state raise ``ValueError``.
    """

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self._seqs: dict[str, _Seq] = {}
        self._free_slots = list(range(config.n_slots))
        self._actions: list[SlotAction] = []
        self._counter = 0
        self._cursor = 0

    # --- queries -----------------------------------------------------------------------

    def state(self, seq_id: str) -> SeqState:
        """The state of ``seq_id`` (KeyError when it is gone or never was)."""
        return self._seqs[seq_id].state

    def __contains__(self, seq_id: object) -> bool:
        return seq_id in self._seqs

    def __len__(self) -> int:
        return len(self._seqs)

    @property
    def used_cells(self) -> int:
        """Cells reserved by resident (active or paused) sequences."""
        return sum(seq.reserve for seq in self._seqs.values() if seq.slot is not None)

    @property
    def has_work(self) -> bool:
        """Whether :meth:`next_step` would return anything."""
        computing = any(seq.state is SeqState.ACTIVE and seq.pending > 0 for seq in self._seqs.values())
        return bool(self._actions) or computing or self._can_admit_head()

    def slot_of(self, seq_id: str) -> int | None:
        """The slot ``seq_id`` holds, if any."""
        return self._seqs[seq_id].slot

    def cached(self, seq_id: str) -> int:
        """Positions of ``seq_id`` in its KV (or that its next feed will have filled)."""
        return self._seqs[seq_id].cached

    # --- events ------------------------------------------------------------------------

    def admitted(self, seq_id: str, *, prompt_tokens: int, reserve: int) -> None:
        """A new sequence with ``prompt_tokens`` ids that will use at most ``reserve`` cells."""
        if seq_id in self._seqs:
            raise ValueError(f"{seq_id} is already scheduled")
        if not 1 <= prompt_tokens <= reserve <= self.config.n_cells:
            raise ValueError(f"need 1 <= prompt_tokens <= reserve <= {self.config.n_cells}")
        self._counter += 1
        self._seqs[seq_id] = _Seq(seq_id, known=prompt_tokens, reserve=reserve, order=self._counter)

    def paused(self, seq_id: str) -> None:
        """Stop computing ``seq_id``; keep its KV."""
        seq = self._seqs[seq_id]
        self._counter += 1
        seq.paused_at = self._counter
        if seq.state is SeqState.ACTIVE:
            seq.state = SeqState.PAUSED
        elif seq.state is SeqState.WAITING:
            seq.state = SeqState.PARKED

    def resumed(self, seq_id: str, *, known: int, keep: int) -> None:
        """Continue ``seq_id`` with ``known`` ids, of which the first ``keep`` are still valid in its KV.

        The KV keeps at most ``known - 1`` positions, so that the next feed yields the logits to sample.
        """
        seq = self._seqs[seq_id]
        if known < 1 or known > seq.reserve:
            raise ValueError(f"{seq_id}: {known} known ids do not fit its reserve of {seq.reserve}")
        seq.known = known
        seq.cached = min(seq.cached, keep, known - 1)
        if seq.state is SeqState.PAUSED:
            seq.state = SeqState.ACTIVE
        elif seq.state is SeqState.PARKED:
            seq.state = SeqState.WAITING
        if seq.slot is not None and seq.kv_len > seq.cached:
            self._actions.append(Trim(seq_id, seq.slot, seq.cached))
            seq.kv_len = seq.cached

    def sampled(self, seq_id: str) -> None:
        """The engine sampled the next token of ``seq_id`` from its last feed."""
        seq = self._seqs[seq_id]
        if seq.pending != 0 or seq.known + 1 > seq.reserve:
            raise ValueError(f"{seq_id} has no room or no logits for a new token")
        seq.known += 1

    def finished(self, seq_id: str) -> None:
        """``seq_id`` ended (stop, length, cancel or error): free what it holds."""
        seq = self._seqs.pop(seq_id)
        if seq.slot is not None:
            self._actions.append(Release(seq_id, seq.slot))
            self._free_slots.append(seq.slot)
        elif seq.saved:
            self._actions.append(Discard(seq_id))

    cancelled = finished

    # --- planning ----------------------------------------------------------------------

    def next_step(self) -> Step:
        """The next step; the driver must run it before telling more events."""
        self._admit()
        feeds = self._feeds()
        actions, self._actions = tuple(self._actions), []
        return Step(actions=actions, feeds=feeds)

    def _admit(self) -> None:
        waiting = sorted((s for s in self._seqs.values() if s.state is SeqState.WAITING), key=lambda s: s.order)
        for seq in waiting:
            if not self._make_room(seq.reserve):
                return  # FIFO: nobody overtakes the head
            slot = min(self._free_slots)
            self._free_slots.remove(slot)
            seq.slot = slot
            seq.state = SeqState.ACTIVE
            if seq.saved:
                seq.saved = False
                self._actions.append(Restore(seq.seq_id, slot, seq.cached))
                seq.kv_len = seq.cached
            else:
                seq.cached = 0
                seq.kv_len = 0
                self._actions.append(Assign(seq.seq_id, slot))

    def _fits(self, cells: int, freed_cells: int = 0, freed_slots: int = 0) -> bool:
        room = self.config.n_cells - self.used_cells + freed_cells
        return len(self._free_slots) + freed_slots >= 1 and room >= cells

    def _make_room(self, cells: int) -> bool:
        if self._fits(cells):
            return True
        victims = sorted((s for s in self._seqs.values() if s.state is SeqState.PAUSED), key=lambda s: s.paused_at)
        chosen: list[_Seq] = []
        for victim in victims:
            chosen.append(victim)
            if self._fits(cells, sum(v.reserve for v in chosen), len(chosen)):
                for evicted in chosen:
                    self._evict(evicted)
                return True
        return False

    def _can_admit_head(self) -> bool:
        waiting = [s for s in self._seqs.values() if s.state is SeqState.WAITING]
        if not waiting:
            return False
        head = min(waiting, key=lambda s: s.order)
        paused = [s for s in self._seqs.values() if s.state is SeqState.PAUSED]
        return self._fits(head.reserve, sum(s.reserve for s in paused), len(paused))

    def _evict(self, seq: _Seq) -> None:
        assert seq.slot is not None
        self._actions.append(Evict(seq.seq_id, seq.slot))
        self._free_slots.append(seq.slot)
        seq.slot = None
        seq.saved = True
        seq.state = SeqState.PARKED

    def _feeds(self) -> tuple[Feed, ...]:
        ready = [s for s in self._seqs.values() if s.state is SeqState.ACTIVE and s.pending > 0]
        # The longest unfed first; then decodes (one token each) before prefills; then by admission.
        ready.sort(key=lambda s: (-s.starved, s.pending > 1, s.order))
        budget = self.config.max_step_tokens
        chosen: list[tuple[_Seq, int]] = []
        for seq in ready:
            if budget == 0:
                break
            size = min(seq.pending, budget)
            chosen.append((seq, size))
            budget -= size
        fed = {seq.seq_id for seq, _ in chosen}
        for seq in ready:
            seq.starved = 0 if seq.seq_id in fed else seq.starved + 1
        return tuple(self._feed(seq, size) for seq, size in chosen)

    def _feed(self, seq: _Seq, size: int) -> Feed:
        assert seq.slot is not None
        start = seq.cached
        seq.cached += size
        seq.kv_len = seq.cached
        return Feed(seq.seq_id, seq.slot, start, seq.cached, logits=seq.cached == seq.known)
