"""ClientConfig and the client constructor: defaults, environment, validation, no I/O."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest

from meshcore_sdk import AsyncClient, Client, ClientConfig, ConfigError, Mode
from meshcore_sdk.config import DEFAULT_ROUTER_URL, normalize_router_url, resolve_config


def _resolve(environ: dict[str, str] | None = None, **overrides: Any) -> ClientConfig:
    arguments: dict[str, Any] = {
        "router_url": None,
        "api_key": None,
        "mode": "proxy",
        "swarm_size": 3,
        "timeout_s": 600.0,
        "max_retries": 2,
        "environ": environ or {},
    }
    arguments.update(overrides)
    return resolve_config(**arguments)


def test_defaults_without_environment() -> None:
    config = _resolve()
    assert (config.router_url, config.api_key, config.mode) == (DEFAULT_ROUTER_URL, None, Mode.PROXY)


def test_environment_fills_what_arguments_leave_out() -> None:
    environ = {"MESHCORE_ROUTER_URL": "http://mesh.example:9000/", "MESHCORE_API_KEY": "sk-env"}
    assert (_resolve(environ).router_url, _resolve(environ).api_key) == ("http://mesh.example:9000", "sk-env")
    chosen = _resolve(environ, router_url="http://other:1", api_key="sk-arg")
    assert (chosen.router_url, chosen.api_key) == ("http://other:1", "sk-arg")


def test_the_constructor_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The constructor is the one place the environment is read."""
    monkeypatch.setenv("MESHCORE_ROUTER_URL", "http://from-env:8080")
    monkeypatch.setenv("MESHCORE_API_KEY", "sk-env")
    client = AsyncClient()
    assert (client.config.router_url, client.config.api_key) == ("http://from-env:8080", "sk-env")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://h:8080", "http://h:8080"),
        ("http://h:8080/", "http://h:8080"),
        ("http://h:8080/v1", "http://h:8080"),
        ("https://h/mesh/v1/", "https://h/mesh"),
    ],
)
def test_router_url_accepts_the_openai_style_v1_suffix(given: str, expected: str) -> None:
    assert normalize_router_url(given) == expected


@pytest.mark.parametrize("url", ["", "h:8080", "ftp://h", "http://"])
def test_bad_router_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        normalize_router_url(url)


@pytest.mark.parametrize("mode", ["proxy", "swarm"])
def test_every_mode_builds_without_io(mode: str) -> None:
    AsyncClient(mode=mode, router_url="http://127.0.0.1:9")
    with Client(mode=mode, router_url="http://127.0.0.1:9") as client:
        assert client.config.mode.value == mode


def test_unknown_mode_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="'proxy', 'direct', 'swarm'"):
        AsyncClient(mode="mesh")


@pytest.mark.parametrize(
    "overrides",
    [{"swarm_size": 0}, {"swarm_size": 6}, {"timeout_s": 0.0}, {"timeout_s": -1.0}, {"max_retries": -1}],
)
def test_out_of_range_arguments_are_config_errors(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        _resolve(**overrides)


def test_config_is_frozen_and_hides_the_key() -> None:
    config = ClientConfig(api_key="sk-secret", swarm_size=5, timeout_s=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.swarm_size = 1  # type: ignore[misc]
    assert "sk-secret" not in repr(config)


def test_from_config_skips_the_environment_and_checks_the_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHCORE_ROUTER_URL", "http://from-env:8080")
    config = ClientConfig(router_url="http://given:1")
    assert AsyncClient.from_config(config).config is config
    assert AsyncClient.from_config(ClientConfig(mode=Mode.SWARM)).config.mode is Mode.SWARM


def test_construction_does_no_network_io() -> None:
    """Building a client sends nothing; the first request is the first I/O."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(500)

    client = Client(transport=httpx.MockTransport(handler))
    client.close()
    AsyncClient(transport=httpx.MockTransport(handler))
    assert seen == []
