"""Notebook rendering: a stream read to its end shows its text, how it ended and its timed events."""

from __future__ import annotations

import httpx
import pytest

from meshcore_sdk import AsyncClient, Client

from .canned import ScriptedRouter, chat_chunks, sse_response

pytestmark = pytest.mark.timeout(30)

ROUTER = "http://router.test:8080"


def test_a_finished_sync_stream_renders_its_text_usage_and_events() -> None:
    router = ScriptedRouter([sse_response(chat_chunks(["<b>Hi", "</b>"], include_usage=True))])
    with Client(ROUTER, transport=httpx.MockTransport(router)) as client:
        stream = client.chat.completions.create(
            model="gemma-3-270m", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        with stream:
            stream.text()
        page = stream._repr_html_()
    assert "&lt;b&gt;Hi&lt;/b&gt;" in page  # escaped
    assert "finish: stop" in page and "worker: node-a" in page and "tokens: 7 in, 2 out" in page
    for kind in ("response_started", "worker_assigned", "first_token", "finished"):
        assert f"<td>{kind}</td>" in page


async def test_an_open_async_stream_renders_what_it_has_so_far() -> None:
    router = ScriptedRouter([sse_response(chat_chunks(["one", " two"]))])
    async with AsyncClient(ROUTER, transport=httpx.MockTransport(router)) as client:
        stream = await client.chat.completions.create(
            model="gemma-3-270m", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        async with stream:
            await anext(stream)
            await anext(stream)
            page = stream._repr_html_()
    assert "state: open" in page and "one" in page and "two" not in page
