"""Shadow prompts: traffic-shaped requests and a fair schedule over nodes on probation (pure, fake clock)."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshcore_router.audits.shadow import ShadowPlanner, shadow_request
from meshcore_sdk.protocol import GenerateFrame, decode_frame, encode_frame

pytestmark = pytest.mark.timeout(60)

MODEL = "sha256:" + "ab" * 32


@given(seed=st.integers(min_value=0, max_value=2**32))
def test_a_shadow_request_is_a_plain_generate_frame(seed: int) -> None:
    """It round-trips the wire like any client's request and names nothing that would give it away."""
    frame = shadow_request(Random(seed), request_id="r-0123456789abcdef01234567", model=MODEL)

    again = decode_frame(encode_frame(frame))

    assert isinstance(again, GenerateFrame)
    assert again == frame
    assert frame.group is None and frame.attempt == 0
    assert frame.messages is not None and frame.messages[-1].role == "user"
    assert "shadow" not in encode_frame(frame).lower()


def test_shadow_requests_vary_like_traffic() -> None:
    rng = Random(7)
    frames = [shadow_request(rng, request_id=f"r-{i}", model=MODEL) for i in range(200)]

    assert len({frame.messages[-1].content for frame in frames if frame.messages}) > 50
    assert {frame.params.temperature == 0.0 for frame in frames} == {True, False}
    assert len({frame.params.max_tokens for frame in frames}) > 2


def test_each_node_on_probation_is_due_about_once_per_interval() -> None:
    """Over a long run every node gets shadow prompts at the configured mean rate, none starved."""
    planner = ShadowPlanner(10.0, Random(3))
    counts = {"a": 0, "b": 0, "c": 0}

    for step in range(10_000):
        for node in planner.due(counts, now=step * 0.1):
            counts[node] += 1

    assert all(90 <= count <= 110 for count in counts.values()), counts


def test_a_node_leaving_probation_is_forgotten() -> None:
    planner = ShadowPlanner(1.0, Random(1))
    planner.due(["a", "b"], now=0.0)

    assert planner.due(["b"], now=100.0) == ["b"]
    assert planner.due([], now=200.0) == []
    assert planner.get_timer() is None
