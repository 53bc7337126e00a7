"""The scheduler core, pure: table tests, then a hypothesis state machine over a fake context."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from meshcore_node.engine.scheduler import (
    Assign,
    Discard,
    Evict,
    Feed,
    Release,
    Restore,
    Scheduler,
    SchedulerConfig,
    SeqState,
    Step,
    Trim,
)


def scheduler(n_cells: int = 100, n_slots: int = 4, max_step_tokens: int = 8) -> Scheduler:
    return Scheduler(SchedulerConfig(n_cells=n_cells, n_slots=n_slots, max_step_tokens=max_step_tokens))


def run_step(s: Scheduler) -> Step:
    """Plan a step and sample a token for every feed that asked for logits."""
    step = s.next_step()
    for feed in step.feeds:
        if feed.logits:
            s.sampled(feed.seq_id)
    return step


# --- table tests ----------------------------------------------------------------------------


def test_a_prompt_is_assigned_then_prefilled_in_chunks_then_decoded() -> None:
    s = scheduler(max_step_tokens=8)
    s.admitted("a", prompt_tokens=12, reserve=20)
    assert run_step(s) == Step(actions=(Assign("a", 0),), feeds=(Feed("a", 0, 0, 8, logits=False),))
    assert run_step(s) == Step(feeds=(Feed("a", 0, 8, 12, logits=True),))
    assert run_step(s) == Step(feeds=(Feed("a", 0, 12, 13, logits=True),))


def test_decodes_go_before_prefills_and_prefills_share_the_rest_of_the_cap() -> None:
    s = scheduler(max_step_tokens=8)
    s.admitted("a", prompt_tokens=2, reserve=20)
    run_step(s)  # a prefilled, sampled
    s.admitted("b", prompt_tokens=30, reserve=40)
    s.admitted("c", prompt_tokens=30, reserve=40)
    step = run_step(s)
    assert step.feeds == (Feed("a", 0, 2, 3, logits=True), Feed("b", 1, 0, 7, logits=False))
    assert step.tokens == 8


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # (event, seq) sequences and the state of "a" after them
        ([("admit", "a")], SeqState.WAITING),
        ([("admit", "a"), ("step", "")], SeqState.ACTIVE),
        ([("admit", "a"), ("pause", "a")], SeqState.PARKED),
        ([("admit", "a"), ("step", ""), ("pause", "a")], SeqState.PAUSED),
        ([("admit", "a"), ("step", ""), ("pause", "a"), ("resume", "a")], SeqState.ACTIVE),
        ([("admit", "a"), ("pause", "a"), ("resume", "a")], SeqState.WAITING),
    ],
)
def test_transition_table(events: list[tuple[str, str]], expected: SeqState) -> None:
    s = scheduler()
    for event, seq_id in events:
        match event:
            case "admit":
                s.admitted(seq_id, prompt_tokens=4, reserve=10)
            case "step":
                run_step(s)
            case "pause":
                s.paused(seq_id)
            case "resume":
                s.resumed(seq_id, known=s.cached(seq_id) + 1, keep=s.cached(seq_id))
    assert s.state("a") is expected


def test_a_paused_sequence_computes_nothing_and_resumes_where_it_was() -> None:
    s = scheduler()
    s.admitted("a", prompt_tokens=4, reserve=10)
    run_step(s)
    s.paused("a")
    assert s.next_step() == Step()
    s.resumed("a", known=5, keep=4)
    assert s.next_step().feeds == (Feed("a", 0, 4, 5, logits=True),)


def test_resume_with_foreign_ids_trims_and_prefills_only_what_is_missing() -> None:
    s = scheduler()
    s.admitted("a", prompt_tokens=4, reserve=20)
    run_step(s)  # KV 4, known 5 (one generated token)
    run_step(s)  # KV 5, known 6
    s.paused("a")
    # Another worker went on: keep our first generated token, then 3 ids it produced.
    s.resumed("a", known=4 + 1 + 3, keep=5)
    assert run_step(s) == Step(feeds=(Feed("a", 0, 5, 8, logits=True),))
    # A resume that replaces our last cached token trims the slot first.
    s.paused("a")
    s.resumed("a", known=8, keep=6)
    assert run_step(s) == Step(actions=(Trim("a", 0, 6),), feeds=(Feed("a", 0, 6, 8, logits=True),))


def test_full_context_makes_admissions_wait_fifo() -> None:
    s = scheduler(n_cells=20, n_slots=4)
    s.admitted("a", prompt_tokens=4, reserve=15)
    s.admitted("b", prompt_tokens=4, reserve=10)
    s.admitted("c", prompt_tokens=2, reserve=2)  # would fit, but does not overtake b
    step = run_step(s)
    assert step.actions == (Assign("a", 0),)
    assert s.state("b") is SeqState.WAITING and s.state("c") is SeqState.WAITING
    s.finished("a")
    assert s.next_step().actions == (Release("a", 0), Assign("b", 0), Assign("c", 1))


def test_paused_sequences_are_evicted_longest_paused_first_only_when_needed() -> None:
    s = scheduler(n_cells=30, n_slots=4)
    for seq_id in "abc":
        s.admitted(seq_id, prompt_tokens=4, reserve=10)
    run_step(s)
    s.paused("b")
    s.paused("a")
    s.admitted("d", prompt_tokens=4, reserve=10)
    assert s.next_step().actions == (Evict("b", 1), Assign("d", 1))
    assert s.state("a") is SeqState.PAUSED and s.state("b") is SeqState.PARKED
    s.finished("d")
    s.resumed("b", known=5, keep=4)
    assert s.next_step().actions == (Release("d", 1), Restore("b", 1, 4))


def test_a_running_sequence_is_never_evicted() -> None:
    s = scheduler(n_cells=20, n_slots=2)
    s.admitted("a", prompt_tokens=4, reserve=20)
    run_step(s)
    s.admitted("b", prompt_tokens=4, reserve=10)
    for _ in range(5):
        assert all(not isinstance(action, Evict) for action in run_step(s).actions)
    assert s.state("b") is SeqState.WAITING


def test_cancelling_an_evicted_sequence_discards_its_saved_state() -> None:
    s = scheduler(n_cells=10, n_slots=1)
    s.admitted("a", prompt_tokens=4, reserve=10)
    run_step(s)
    s.paused("a")
    s.admitted("b", prompt_tokens=4, reserve=10)
    assert s.next_step().actions == (Evict("a", 0), Assign("b", 0))
    s.cancelled("a")
    assert s.next_step().actions == (Discard("a"),)


def test_admission_checks_its_arguments() -> None:
    s = scheduler(n_cells=10)
    with pytest.raises(ValueError, match="reserve"):
        s.admitted("a", prompt_tokens=4, reserve=11)
    s.admitted("a", prompt_tokens=4, reserve=10)
    with pytest.raises(ValueError, match="already"):
        s.admitted("a", prompt_tokens=4, reserve=10)


# --- the state machine -------------------------------------------------------------------


class FakeContext:
    """What the driver would do with the actions: who holds which slot, how much KV each has."""

    def __init__(self) -> None:
        self.slots: dict[int, str] = {}
        self.kv: dict[str, int] = {}
        self.saved: dict[str, int] = {}

    def apply(self, action: object) -> None:
        match action:
            case Assign(seq_id, slot):
                assert slot not in self.slots
                self.slots[slot] = seq_id
                self.kv[seq_id] = 0
            case Restore(seq_id, slot, keep):
                assert slot not in self.slots
                self.slots[slot] = seq_id
                self.kv[seq_id] = min(self.saved.pop(seq_id), keep)
            case Evict(seq_id, slot):
                assert self.slots.pop(slot) == seq_id
                self.saved[seq_id] = self.kv.pop(seq_id)
            case Trim(seq_id, slot, keep):
                assert self.slots[slot] == seq_id
                self.kv[seq_id] = min(self.kv[seq_id], keep)
            case Release(seq_id, slot):
                assert self.slots.pop(slot) == seq_id
                del self.kv[seq_id]
            case Discard(seq_id):
                del self.saved[seq_id]

    def feed(self, feed: Feed) -> None:
        assert self.slots[feed.slot] == feed.seq_id
        assert self.kv[feed.seq_id] == feed.start, "a feed continues exactly where the KV ends"
        self.kv[feed.seq_id] = feed.stop


class SchedulerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.config = SchedulerConfig(n_cells=64, n_slots=4, max_step_tokens=6)
        self.s = Scheduler(self.config)
        self.context = FakeContext()
        self.known: dict[str, int] = {}
        self.reserve: dict[str, int] = {}
        self.unfed: dict[str, int] = {}  # steps in a row an active sequence with pending ids was not fed
        self.waited: dict[str, int] = {}
        self.next_id = 0

    @rule(prompt=st.integers(1, 20), extra=st.integers(1, 30))
    def admit(self, prompt: int, extra: int) -> None:
        seq_id = f"s{self.next_id}"
        self.next_id += 1
        reserve = min(prompt + extra, self.config.n_cells)
        self.s.admitted(seq_id, prompt_tokens=prompt, reserve=reserve)
        self.known[seq_id] = prompt
        self.reserve[seq_id] = reserve

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def pause(self, data: st.DataObject) -> None:
        self.s.paused(data.draw(st.sampled_from(sorted(self.known))))

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        seq_id = data.draw(st.sampled_from(sorted(self.known)))
        if self.s.state(seq_id) not in (SeqState.PAUSED, SeqState.PARKED):
            return
        known = data.draw(st.integers(1, self.reserve[seq_id]))
        keep = data.draw(st.integers(0, known))
        self.s.resumed(seq_id, known=known, keep=keep)
        self.known[seq_id] = known

    @precondition(lambda self: self.known)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        seq_id = data.draw(st.sampled_from(sorted(self.known)))
        self.s.cancelled(seq_id)
        self._forget(seq_id)

    @rule()
    def step(self) -> None:
        before = {seq_id: self.s.state(seq_id) for seq_id in self.known}
        step = self.s.next_step()
        for action in step.actions:
            assert not (isinstance(action, Evict) and before[action.seq_id] is not SeqState.PAUSED)
            self.context.apply(action)
        assert step.tokens <= self.config.max_step_tokens
        fed = {feed.seq_id for feed in step.feeds}
        assert len(fed) == len(step.feeds), "one feed per sequence"
        for feed in step.feeds:
            assert before[feed.seq_id] in (SeqState.ACTIVE, SeqState.WAITING), "a paused sequence never computes"
            self.context.feed(feed)
            assert feed.logits == (feed.stop == self.known[feed.seq_id])
        for feed in step.feeds:
            if feed.logits:
                if self.known[feed.seq_id] == self.reserve[feed.seq_id]:
                    self.s.finished(feed.seq_id)  # the engine ends it at its length limit
                    self._forget(feed.seq_id)
                else:
                    self.s.sampled(feed.seq_id)
                    self.known[feed.seq_id] += 1
        self._account(fed)

    def _account(self, fed: set[str]) -> None:
        for seq_id in list(self.known):
            state = self.s.state(seq_id)
            pending = self.known[seq_id] > self.s.cached(seq_id)
            starving = state is SeqState.ACTIVE and pending and seq_id not in fed
            self.unfed[seq_id] = self.unfed.get(seq_id, 0) + 1 if starving else 0
            assert self.unfed[seq_id] <= self.config.n_slots, f"{seq_id} starves"
            head_waits = state is SeqState.WAITING and self._is_head(seq_id) and not self._anyone_active()
            self.waited[seq_id] = self.waited.get(seq_id, 0) + 1 if head_waits else 0
            assert self.waited[seq_id] <= 1, f"{seq_id} waits though the context holds nothing running"

    def _is_head(self, seq_id: str) -> bool:
        waiting = [s for s in self.known if self.s.state(s) is SeqState.WAITING]
        return min(waiting, key=lambda s: int(s[1:])) == seq_id

    def _anyone_active(self) -> bool:
        return any(self.s.state(s) is SeqState.ACTIVE for s in self.known)

    def _forget(self, seq_id: str) -> None:
        for table in (self.known, self.reserve, self.unfed, self.waited):
            table.pop(seq_id, None)

    @invariant()
    def capacity_is_never_exceeded(self) -> None:
        assert self.s.used_cells <= self.config.n_cells
        assert len(self.context.slots) <= self.config.n_slots
        for seq_id, kv in self.context.kv.items():
            assert kv <= self.reserve.get(seq_id, kv)

    @invariant()
    def resident_sequences_hold_their_slot(self) -> None:
        for seq_id in self.known:
            slot = self.s.slot_of(seq_id)
            if self.s.state(seq_id) in (SeqState.ACTIVE, SeqState.PAUSED):
                assert slot is not None and self.context.slots[slot] == seq_id
            else:
                assert slot is None


TestSchedulerMachine = SchedulerMachine.TestCase
TestSchedulerMachine.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
