"""The router's public surface and its settings."""

from __future__ import annotations

import inspect

import pytest

import meshcore_router
from meshcore_router import RouterConfig, create_app
from meshcore_sdk.protocol.errors import ConfigError

pytestmark = pytest.mark.timeout(30)


def test_exported_names_are_pinned() -> None:
    assert meshcore_router.__all__ == ["RouterConfig", "create_app", "serve"]


def test_create_app_takes_a_config_and_injected_clocks() -> None:
    parameters = inspect.signature(create_app).parameters
    assert list(parameters) == ["config", "clock", "wall_clock"]
    assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in ("clock", "wall_clock"))


def test_apps_share_no_state() -> None:
    first, second = create_app(RouterConfig(port=0)), create_app(RouterConfig(port=0))
    assert first.state.router is not second.state.router
    assert first.state.router.metrics.registry is not second.state.router.metrics.registry


def test_config_defaults_and_derived_values() -> None:
    config = RouterConfig()
    assert (config.host, config.port, config.heartbeat_interval_s, config.missed_heartbeats) == (
        "127.0.0.1",
        8080,
        1.0,
        3,
    )
    assert config.expire_after_s == 3.0
    assert (config.frame_limits.max_frame_bytes, config.frame_limits.max_depth) == (1 << 20, 16)
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "fields",
    [
        {"port": 70000},
        {"heartbeat_interval_s": 0},
        {"missed_heartbeats": 0},
        {"ws_max_message_bytes": 10, "max_frame_bytes": 20},
        {"first_token_timeout_s": 0},
    ],
)
def test_bad_settings_are_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RouterConfig(**fields)  # type: ignore[arg-type]
