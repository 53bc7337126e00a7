"""Fixtures of the SDK tests: fake time, and one scenario run through either client twin."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from meshcore_sdk import AsyncClient, Client, MeshError, Runtime

from .canned import ScriptedRouter


@dataclass
class FakeTime:
    """A monotonic clock that only moves when someone sleeps; the sleeps are recorded."""

    now_s: float = 100.0
    wall_s: float = 1_700_000_000.0
    sleeps: list[float] = field(default_factory=list)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds
        self.wall_s += seconds

    def clock(self) -> float:
        return self.now_s

    def wall_clock(self) -> float:
        return self.wall_s

    def runtime(self, seed: int = 1234) -> Runtime:
        return Runtime(sleep=self.sleep, rng=random.Random(seed), clock=self.clock, wall_clock=self.wall_clock)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


class Twin:
    """One scenario, run through :class:`AsyncClient` or through the sync :class:`Client`.

    The sync client is called straight from the test's running loop, as a notebook cell would.
    """

    def __init__(self, sync: bool, fake_time: FakeTime) -> None:
        self.sync = sync
        self.fake_time = fake_time
        self._clients: list[Client | AsyncClient] = []

    def client(self, handler: ScriptedRouter | Callable[[httpx.Request], httpx.Response], **options: Any) -> Any:
        options.setdefault("router_url", "http://router.test:8080")
        options.setdefault("runtime", self.fake_time.runtime())
        kind = Client if self.sync else AsyncClient
        client = kind(transport=httpx.MockTransport(handler), **options)
        self._clients.append(client)
        return client

    async def call(self, method: Callable[..., Any], **kwargs: Any) -> Any:
        result = method(**kwargs)
        return result if self.sync else await result

    async def chat(self, client: Any, **kwargs: Any) -> Any:
        return await self.call(client.chat.completions.create, **kwargs)

    async def complete(self, client: Any, **kwargs: Any) -> Any:
        return await self.call(client.completions.create, **kwargs)

    async def drain(self, stream: Any) -> tuple[list[Any], MeshError | None]:
        """Read a stream to its end inside its context manager; return its chunks and the error that ended it."""
        chunks: list[Any] = []
        try:
            if self.sync:
                with stream:
                    for chunk in stream:
                        chunks.append(chunk)
            else:
                async with stream:
                    async for chunk in stream:
                        chunks.append(chunk)
        except MeshError as error:
            return chunks, error
        return chunks, None

    async def close(self) -> None:
        for client in self._clients:
            if isinstance(client, Client):
                client.close()
            else:
                await client.aclose()


@pytest.fixture(params=[False, True], ids=["async", "sync"])
async def twin(request: pytest.FixtureRequest, fake_time: FakeTime) -> AsyncIterator[Twin]:
    runner = Twin(request.param, fake_time)
    yield runner
    await runner.close()
