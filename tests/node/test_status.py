"""Node status, throughput and the thrash guard are decided from plain facts."""

from __future__ import annotations

import pytest

from meshcore_node.engine.guard import cpu_has_amx, needs_amx_guard
from meshcore_node.models import served_id
from meshcore_node.status import EngineState, node_status
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
