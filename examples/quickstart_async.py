"""Quick start, async: two questions at once, one streamed, one whole.

Run a mesh first, e.g. ``meshcore up`` (a router on http://127.0.0.1:8080 and three local
workers on the bundled Gemma 3 270M), then ``python examples/quickstart_async.py``.
``MESHCORE_ROUTER_URL`` points at another router; ``MESHCORE_MODEL`` names another model.
"""

from __future__ import annotations

import asyncio
import os

from meshcore_sdk import AsyncClient, StreamEvent

MODEL = os.environ.get("MESHCORE_MODEL", "gemma-3-270m")


async def streamed(client: AsyncClient) -> str:
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=32,
        temperature=0,
        stream=True,
    )
    async with stream:
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    return f"{text!r} from worker {stream.worker_id}, first token after {first_token_ms(stream.events):.0f} ms"


async def whole(client: AsyncClient) -> str:
    completion = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16, temperature=0
    )
    return f"{completion.text!r} from worker {completion.meshcore.worker_id}"


def first_token_ms(events: list[StreamEvent]) -> float:
    return next((event.at_s * 1000 for event in events if event.kind == "first_token"), float("nan"))


async def main() -> None:
    # the router: MESHCORE_ROUTER_URL, then http://127.0.0.1:8080
    async with AsyncClient() as client, asyncio.TaskGroup() as group:
        first = group.create_task(streamed(client))
        second = group.create_task(whole(client))
    print("streamed:", first.result())
    print("whole:   ", second.result())


if __name__ == "__main__":
    asyncio.run(main())
