"""The sync twin: its own portal thread, usable inside a running event loop, closed by close()."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from meshcore_sdk import Client, Stream, StreamClosed

from .canned import MODEL, ScriptedRouter, chat_chunks, chat_completion, json_response, sse_response

MESSAGES = [{"role": "user", "content": "Hi"}]


def _portal_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == "meshcore-client"}


def test_sync_client_works_inside_a_running_event_loop() -> None:
    """A notebook cell runs inside a loop: the sync client still answers, without nest_asyncio."""
    router = ScriptedRouter([json_response(chat_completion("from a loop")), sse_response(chat_chunks(["a", "b"]))])

    async def cell() -> tuple[str, str]:
        assert asyncio.get_running_loop().is_running()
        with Client(transport=httpx.MockTransport(router)) as client:
            completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
            with client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True) as stream:
                assert isinstance(stream, Stream)
                text = "".join(chunk.text for chunk in stream)
        return completion.text, text

    assert asyncio.run(cell()) == ("from a loop", "ab")


def test_each_client_owns_a_portal_thread_that_close_stops() -> None:
    """The loop thread starts with the client, belongs to it alone, and is joined by close()."""
    before = _portal_threads()
    first, second = Client(), Client()
    started = _portal_threads() - before
    assert len(started) == 2

    first.close()
    first.close()  # closing twice is harmless
    assert len(_portal_threads() - before) == 1
    with pytest.raises(StreamClosed):
        first.models.list()

    second.close()
    assert _portal_threads() - before == set()


def test_closing_the_client_leaves_open_streams_closable() -> None:
    """A stream outliving its client can still be closed without error."""
    router = ScriptedRouter([sse_response(chat_chunks(["a"]))])
    client = Client(transport=httpx.MockTransport(router))
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    client.close()
    stream.close()
    with pytest.raises(StreamClosed):
        next(stream)


def test_sync_stream_can_be_read_from_another_thread() -> None:
    """Streams are pulled through the portal, so the reading thread does not matter."""
    router = ScriptedRouter([sse_response(chat_chunks(["x", "y"]))])
    with Client(transport=httpx.MockTransport(router)) as client:
        stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
        texts: list[str] = []
        reader = threading.Thread(target=lambda: texts.extend(chunk.text for chunk in stream))
        reader.start()
        reader.join(timeout=10)
        assert texts == ["", "x", "y"]
