"""Node status, throughput and the thrash guard are decided from plain facts."""

from __future__ import annotations

import pytest

from meshcore_node.engine.guard import cpu_has_amx, needs_amx_guard
from meshcore_node.models import served_id
from meshcore_node.status import EngineState, accepts_hedges, default_hedge_reserve, node_status
from meshcore_node.telemetry import MemorySample, SwapWatch, ThroughputMeter
from meshcore_sdk.protocol import NodeStatus

READY, STARTING = EngineState.READY, EngineState.STARTING


@pytest.mark.parametrize(
    ("engine", "in_flight", "swapping", "draining", "expected"),
    [
        (READY, 0, False, False, NodeStatus.READY),
        (READY, 3, False, False, NodeStatus.READY),
        (READY, 4, False, False, NodeStatus.BUSY),
        (READY, 0, True, False, NodeStatus.BUSY),
        (STARTING, 0, False, False, NodeStatus.STARTING),
        (STARTING, 0, True, True, NodeStatus.DRAINING),
        (READY, 0, False, True, NodeStatus.DRAINING),
    ],
)
def test_node_status(engine: EngineState, in_flight: int, swapping: bool, draining: bool, expected: NodeStatus) -> None:
    assert node_status(engine=engine, in_flight=in_flight, capacity=4, swapping=swapping, draining=draining) == expected


@pytest.mark.parametrize(
    ("status", "in_flight", "reserve", "expected"),
    [
        (NodeStatus.READY, 0, 0, True),
        (NodeStatus.READY, 3, 0, True),  # the last free slot may take a hedge
        (NodeStatus.READY, 4, 0, False),  # every slot in use
        (NodeStatus.READY, 6, 0, False),  # requests waiting for admission
        (NodeStatus.READY, 2, 1, True),
        (NodeStatus.READY, 3, 1, False),  # the reserved slot is kept for primaries
        (NodeStatus.BUSY, 0, 0, False),  # swapping, or full
        (NodeStatus.STARTING, 0, 0, False),
        (NodeStatus.DRAINING, 0, 0, False),
    ],
)
def test_a_node_pushes_back_hedges_when_busy(status: NodeStatus, in_flight: int, reserve: int, expected: bool) -> None:
    assert accepts_hedges(status=status, in_flight=in_flight, capacity=4, reserve_slots=reserve) is expected


@pytest.mark.parametrize(("capacity", "reserve"), [(1, 0), (3, 0), (4, 1), (8, 2), (16, 4)])
def test_the_default_reserve_is_a_quarter_of_capacity(capacity: int, reserve: int) -> None:
    assert default_hedge_reserve(capacity) == reserve


def test_swap_watch_reports_growth_of_swap_ins() -> None:
    watch = SwapWatch()
    assert [watch.update(MemorySample(1, sin)) for sin in (0, 0, 4096, 4096, 8192)] == [False, False, True, False, True]


def test_throughput_counts_tokens_in_the_window() -> None:
    meter = ThroughputMeter(window_s=2.0)
    for now in (0.0, 0.5, 1.0, 1.5):
        meter.record(now)
    assert meter.rate(1.5) == 2.0
    assert meter.rate(2.6) == 1.0
    assert meter.rate(10.0) == 0.0


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        ("processor: 0\nflags\t\t: fpu avx2 amx_bf16 amx_tile amx_int8\n", True),
        ("processor: 0\nflags\t\t: fpu avx2 avx512f\n", False),
        ("processor: 0\n", False),
    ],
)
def test_amx_detection(cpuinfo: str, expected: bool) -> None:
    assert cpu_has_amx(cpuinfo) is expected


def test_the_guard_can_be_forced() -> None:
    assert needs_amx_guard(True) is True
    assert needs_amx_guard(False) is False


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Gemma 3 270m", "gemma-3-270m"), ("SmolLM2 135M Instruct", "smollm2-135m-instruct"), ("  ", "model")],
)
def test_served_id(name: str, expected: str) -> None:
    assert served_id(name) == expected
