"""The swarm machine, read as protocol traces: no loop, no clock, no sleep."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from meshcore_sdk.swarm.machine import (
    Cancel,
    CatchUp,
    Deliver,
    Fail,
    FailoverStarted,
    Finish,
    LeaderElected,
    Pause,
    Phase,
    RequestWorker,
    Resume,
    SwarmAction,
    SwarmConfig,
    SwarmMachine,
    TokenReceived,
    WorkerAdded,
    WorkerFinished,
    WorkerLost,
)

CONFIG = SwarmConfig(first_token_timeout_s=5.0, min_gap_s=0.05, failover_timeout_s=2.0, release_after_tokens=4)


def token(worker: str, seq: int) -> TokenReceived:
    """Every worker computes the same answer: the token at position i is 100 + i."""
    return TokenReceived(worker, seq, 100 + seq, b"t%d" % seq)


def deliver(worker: str, seq: int) -> Deliver:
    return Deliver(worker, seq, 100 + seq, b"t%d" % seq)


def started(workers: str = "abc", config: SwarmConfig = CONFIG) -> SwarmMachine:
    return SwarmMachine(list(workers), config, now=0.0)


def test_first_token_elects_the_leader_and_pauses_the_rest() -> None:
    m = started()
    assert m.get_timer() == 5.0
    m.receive(token("b", 0), now=0.4)
    assert m.actions() == [LeaderElected("b", 1), Pause("a"), Pause("c"), deliver("b", 0)]
    m.receive(token("a", 0), now=0.5)  # a follower's own first token is kept, never delivered
    assert m.actions() == []
    assert (m.phase, m.leader, m.term) == (Phase.STREAMING, "b", 1)


def test_leader_tokens_are_delivered_in_order_and_the_stall_threshold_adapts() -> None:
    m = started()
    m.receive(token("a", 0), now=1.0)
    m.actions()
    for seq, at in ((1, 1.1), (2, 1.2), (3, 1.3)):
        m.receive(token("a", seq), now=at)
        assert deliver("a", seq) in m.actions()
    timer = m.get_timer()
    assert timer is not None and 1.3 + 0.05 <= timer <= 1.3 + 0.31


def test_a_stalled_leader_fails_over_to_the_follower_holding_the_most() -> None:
    m = started()
    m.receive(token("a", 0), now=0.1)
    m.receive(token("c", 0), now=0.2)
    m.receive(token("c", 1), now=0.25)  # c had computed further before its pause arrived
    m.receive(token("a", 1), now=0.3)
    m.actions()
    deadline = m.get_timer()
    assert deadline is not None
    m.handle_timer(now=deadline)
    assert m.actions() == [
        FailoverStarted("a", "c", f"stalled: no token for {deadline - 0.3:.3f} s"),
        Resume("c", 2, ()),  # c holds both delivered positions already
    ]
    m.receive(token("c", 2), now=deadline + 0.1)
    assert m.actions() == [Cancel("a"), LeaderElected("c", 2), deliver("c", 2)]
    m.receive(token("a", 2), now=deadline + 0.2)  # the old leader woke up: its token is stale
    assert m.actions() == []


def test_a_leader_that_recovers_first_keeps_leading() -> None:
    m = started("ab")
    m.receive(token("a", 0), now=0.0)
    m.receive(token("a", 1), now=0.1)
    m.actions()
    m.receive(WorkerLost("zz", "never heard of"), now=0.2)
    m.handle_timer(now=10.0)
    assert m.actions()[-1] == Resume("b", 2, (100, 101))
    m.receive(token("a", 2), now=10.05)
    assert m.actions() == [Cancel("b"), deliver("a", 2)]
    assert (m.phase, m.leader, m.term) == (Phase.STREAMING, "a", 1)


def test_a_lost_leader_with_no_follower_gets_a_cold_catch_up() -> None:
    m = started("a")
    m.receive(token("a", 0), now=0.0)
    m.actions()
    m.receive(WorkerLost("a", "channel closed"), now=0.5)
    assert m.actions() == [FailoverStarted("a", None, "channel closed"), RequestWorker()]
    m.receive(WorkerAdded("fresh"), now=0.7)
    assert m.actions() == [Resume("fresh", 1, (100,))]
    m.receive(token("fresh", 1), now=0.9)
    assert m.actions() == [LeaderElected("fresh", 2), deliver("fresh", 1)]


def test_a_fresh_worker_lost_before_it_was_added_ends_the_wait() -> None:
    m = started("a")
    m.receive(token("a", 0), now=0.0)
    m.receive(WorkerLost("a", "channel closed"), now=0.5)
    m.actions()
    m.receive(WorkerLost("a.1", "no_capacity: refused"), now=0.6)
    assert m.actions() == [Fail((("a", "channel closed"), ("a.1", "no_capacity: refused")))]
    assert m.get_timer() is None


def test_a_fresh_worker_that_never_comes_fails_the_swarm_at_the_failover_deadline() -> None:
    m = started("a")
    m.receive(token("a", 0), now=0.0)
    m.receive(WorkerLost("a", "channel closed"), now=0.5)
    assert m.actions()[-1] == RequestWorker()
    m.handle_timer(now=0.5 + CONFIG.failover_timeout_s)
    assert m.actions() == [Fail((("a", "channel closed"), ("(fresh worker)", "did not come in time")))]
    assert m.get_timer() is None


def test_the_swarm_gives_up_with_every_cause_when_nobody_is_left() -> None:
    m = started("ab", SwarmConfig(max_cold_catchups=0))
    m.receive(token("a", 0), now=0.0)
    m.receive(WorkerLost("b", "busy"), now=0.1)
    m.actions()
    m.receive(WorkerLost("a", "engine crashed"), now=0.2)
    assert m.actions() == [Fail((("a", "engine crashed"), ("b", "busy")))]
    assert m.get_timer() is None
    m.receive(token("a", 1), now=0.3)
    assert m.actions() == []


def test_no_first_token_in_time_fails_the_race() -> None:
    m = started("ab")
    m.handle_timer(now=4.9)
    assert m.actions() == []
    m.handle_timer(now=5.0)
    assert m.actions() == [
        Cancel("a"),
        Cancel("b"),
        Fail((("a", "no first token in time"), ("b", "no first token in time"))),
    ]


def test_followers_beyond_the_warm_one_are_released_once_the_leader_is_healthy() -> None:
    m = started("abcd")
    m.receive(token("a", 0), now=0.0)
    m.receive(token("d", 0), now=0.05)  # d holds position 0 too: it is the best follower
    m.actions()
    for seq in range(1, 4):
        m.receive(token("a", seq), now=0.1 * seq)
    assert m.actions()[-2:] == [Cancel("b"), Cancel("c")]


def test_the_warm_follower_is_kept_caught_up_so_a_failover_prefills_little() -> None:
    m = started("ab", SwarmConfig(release_after_tokens=2, catch_up_every_tokens=3))
    m.receive(token("a", 0), now=0.0)
    for seq in range(1, 6):
        m.receive(token("a", seq), now=0.1 * seq)
    catch_ups = [action for action in m.actions() if isinstance(action, CatchUp)]
    assert catch_ups == [CatchUp("b", 3, (100, 101, 102)), CatchUp("b", 6, (103, 104, 105))]
    m.receive(WorkerLost("a", "gone"), now=1.0)
    assert m.actions()[-1] == Resume("b", 6, ())


def test_the_leader_finishing_finishes_the_swarm() -> None:
    m = started("ab")
    m.receive(token("a", 0), now=0.0)
    m.receive(WorkerFinished("a", "stop", 1), now=0.1)
    assert m.actions()[-2:] == [Cancel("b"), Finish("stop")]
    assert (m.phase, m.get_timer()) == (Phase.FINISHED, None)


def test_a_follower_finishing_early_is_no_longer_a_candidate() -> None:
    m = started("ab", SwarmConfig(max_cold_catchups=0))
    m.receive(token("a", 0), now=0.0)
    m.receive(WorkerFinished("b", "length", 1), now=0.1)
    m.receive(WorkerLost("a", "gone"), now=0.2)
    assert m.actions()[-1] == Fail((("a", "gone"), ("b", "finished early (length)")))


def test_a_gap_in_a_workers_own_positions_drops_that_worker() -> None:
    m = started("ab")
    m.receive(token("b", 2), now=0.0)
    m.receive(token("a", 0), now=0.1)
    assert m.actions() == [LeaderElected("a", 1), deliver("a", 0)]


class SwarmTraces(RuleBasedStateMachine):
    """Random interleavings of tokens, losses, finishes, additions and time."""

    @initialize(count=st.integers(min_value=1, max_value=5))
    def start(self, count: int) -> None:
        self.names = [f"w{i}" for i in range(count)]
        self.machine = SwarmMachine(self.names, CONFIG, now=0.0)
        self.now = 0.0
        self.next_seq = dict.fromkeys(self.names, 0)
        self.alive = set(self.names)
        self.delivered: list[int] = []
        self.terms: list[int] = []
        self.ended = False
        self.requested = 0
        self.added = 0
        self.completed_with: int | None = None

    def _take(self) -> None:
        for action in self.machine.actions():
            self._check(action)

    def _check(self, action: SwarmAction) -> None:
        assert not self.ended, f"{action} after the end"
        match action:
            case Deliver(worker=worker, seq=seq, token_id=token_id):
                assert seq == len(self.delivered), "positions are delivered in order, once"
                assert worker in (self.machine.leader, self.machine.candidate) or worker == self.machine.leader
                self.delivered.append(token_id)
            case LeaderElected(term=term):
                assert not self.terms or term > self.terms[-1], "terms strictly increase"
                self.terms.append(term)
            case Resume(worker=worker, from_seq=from_seq, token_ids=token_ids):
                assert from_seq == len(self.delivered)
                assert token_ids == tuple(self.delivered[from_seq - len(token_ids) :])
                self.next_seq[worker] = from_seq
            case RequestWorker():
                self.requested += 1
            case Finish():
                self.ended = True
                assert self.completed_with == len(self.delivered)
            case Fail():
                self.ended = True
            case CatchUp(worker=worker, from_seq=from_seq, token_ids=token_ids):
                assert from_seq == len(self.delivered)
                assert token_ids == tuple(self.delivered[from_seq - len(token_ids) :])
                self.next_seq[worker] = from_seq
            case Cancel() | Pause() | FailoverStarted():
                pass

    @rule(data=st.data())
    @precondition(lambda self: self.alive)
    def send_token(self, data: st.DataObject) -> None:
        worker = data.draw(st.sampled_from(sorted(self.alive)))
        self.now += data.draw(st.floats(min_value=0.0, max_value=0.2))
        seq = self.next_seq[worker]
        self.next_seq[worker] = seq + 1
        self.machine.receive(token(worker, seq), now=self.now)
        self._take()

    @rule(data=st.data())
    @precondition(lambda self: self.alive)
    def lose(self, data: st.DataObject) -> None:
        worker = data.draw(st.sampled_from(sorted(self.alive)))
        self.alive.discard(worker)
        self.machine.receive(WorkerLost(worker, "lost"), now=self.now)
        self._take()

    @rule(data=st.data())
    @precondition(lambda self: self.alive)
    def finish(self, data: st.DataObject) -> None:
        worker = data.draw(st.sampled_from(sorted(self.alive)))
        self.alive.discard(worker)
        if worker == self.machine.leader:
            self.completed_with = self.next_seq[worker]
        self.machine.receive(WorkerFinished(worker, "stop", self.next_seq[worker]), now=self.now)
        self._take()

    @rule()
    @precondition(lambda self: self.requested > self.added)
    def add(self) -> None:
        self.added += 1
        name = f"fresh{self.added}"
        self.alive.add(name)
        self.next_seq[name] = 0
        self.machine.receive(WorkerAdded(name), now=self.now)
        self._take()

    @rule(dt=st.floats(min_value=0.0, max_value=6.0))
    def tick(self, dt: float) -> None:
        self.now += dt
        timer = self.machine.get_timer()
        if timer is not None and self.now >= timer:
            self.machine.handle_timer(now=self.now)
        self._take()

    @invariant()
    def delivered_matches_the_machine(self) -> None:
        if hasattr(self, "machine"):
            assert self.delivered == self.machine.delivered == [100 + i for i in range(len(self.delivered))]

    @invariant()
    def timer_exists_exactly_while_live(self) -> None:
        if hasattr(self, "machine"):
            terminal = self.machine.phase in (Phase.FINISHED, Phase.FAILED)
            assert (self.machine.get_timer() is None) == terminal == self.ended


SwarmTraces.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None, derandomize=True)
test_swarm_traces = SwarmTraces.TestCase
