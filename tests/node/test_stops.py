"""The stop-string matcher releases exactly the text before the first stop string."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcore_node.engine.stops import Piece, StopMatcher


def run(tokens: list[bytes], stops: list[str]) -> tuple[list[Piece], bool]:
    matcher = StopMatcher(stops)
    released: list[Piece] = []
    for token_id, data in enumerate(tokens):
        released += matcher.feed(token_id, data)
        if matcher.stopped:
            break
    released += matcher.flush()
    return released, matcher.stopped


@pytest.mark.parametrize(
    ("tokens", "stops", "expected", "stopped"),
    [
        ([b"Hel", b"lo"], [], [Piece(0, b"Hel"), Piece(1, b"lo")], False),
        ([b"a", b"b\n", b"c"], ["\n"], [Piece(0, b"a"), Piece(1, b"b")], True),
        ([b"a", b"\n", b"c"], ["\n"], [Piece(0, b"a")], True),
        ([b"ab", b"cEN", b"Dx"], ["END"], [Piece(0, b"ab"), Piece(1, b"c")], True),
        ([b"ab", b"E", b"x"], ["END"], [Piece(0, b"ab"), Piece(1, b"E"), Piece(2, b"x")], False),
        ([b"xx", b"yy"], ["yy", "xxy"], [], True),
        ([b"", b"a"], ["b"], [Piece(0, b""), Piece(1, b"a")], False),
    ],
)
def test_table(tokens: list[bytes], stops: list[str], expected: list[Piece], stopped: bool) -> None:
    assert run(tokens, stops) == (expected, stopped)


def test_holds_a_possible_stop_prefix_until_it_is_decided() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.feed(0, b"abE") == []
    assert matcher.feed(1, b"N") == []
    assert matcher.feed(2, b"x") == [Piece(0, b"abE"), Piece(1, b"N"), Piece(2, b"x")]


def test_nothing_after_the_stop() -> None:
    matcher = StopMatcher(["."])
    assert matcher.feed(0, b"a.") == [Piece(0, b"a")]
    assert matcher.feed(1, b"b") == []
    assert matcher.flush() == []


@given(
    tokens=st.lists(st.binary(max_size=4), max_size=20),
    stops=st.lists(st.text(alphabet="ab\n", min_size=1, max_size=3), max_size=3),
)
def test_released_text_is_the_text_before_the_first_stop(tokens: list[bytes], stops: list[str]) -> None:
    released, stopped = run(tokens, stops)
    text = b"".join(tokens)
    hits = [index for stop in stops if (index := text.find(stop.encode())) >= 0]
    if hits:
        # The matcher sees the text token by token, so it stops at the first stop that completes.
        assert stopped
        assert b"".join(p.data for p in released) == text[: _first_completed(tokens, stops)]
    else:
        assert not stopped
        assert b"".join(p.data for p in released) == text
    assert [p.token_id for p in released] == sorted({p.token_id for p in released})


def _first_completed(tokens: list[bytes], stops: list[str]) -> int:
    seen = b""
    for data in tokens:
        seen += data
        hits = [index for stop in stops if (index := seen.find(stop.encode())) >= 0]
        if hits:
            return min(hits)
    raise AssertionError("no stop completed")
