"""Swarm failover: three workers race, the leader is killed mid-stream, a follower finishes the answer.

This example starts its own local mesh (a router and three workers on the bundled Gemma 3 270M;
it needs the ``node``, ``router`` and ``demo`` extras) and stops it at the end, so no
``meshcore up`` is needed: ``python examples/swarm_failover.py``.

The prompt's greedy continuation has a wide margin between its two likeliest tokens at every
position, so the follower that takes over writes exactly what the leader would have
(``docs/concepts/swarm.md`` explains the near-tie exception).
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import fields

from meshcore_sdk import AsyncClient
from meshcore_sdk.mesh import LocalMesh, MeshConfig

MODEL = "gemma-3-270m"  # the model every node of the local mesh serves
PROMPT = "1, 2, 3, 4, 5,"
KILL_AFTER_TOKENS = 10


async def main() -> None:
    print("starting a local mesh: a router and three workers ...")
    config = MeshConfig(nodes=3, node_threads=1, n_ctx=1024)  # one llama.cpp thread each: three fit a small machine
    async with LocalMesh(config) as mesh, AsyncClient(router_url=mesh.router_url, mode="swarm", swarm_size=3) as client:
        stream = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=40, temperature=0, stream=True)
        text, tokens, killed = "", 0, None
        async with stream:
            async for chunk in stream:
                text += chunk.text
                if chunk.meshcore.seq is None:
                    continue  # a chunk without a token
                tokens += 1
                if tokens == KILL_AFTER_TOKENS:
                    killed = chunk.meshcore.worker_id  # the leader produced this token
                    assert killed is not None
                    print(f"SIGKILL the leader, {killed}, after {tokens} tokens")
                    mesh.nodes[killed].send_signal(signal.SIGKILL)

        print(f"prompt: {PROMPT!r}")
        print(f"answer: {text!r}")
        print(f"finish: {stream.finish_reason}; killed {killed}; the last token came from {stream.worker_id}")
        for event in stream.events:  # leader_elected, paused, failover, released, ... each with its time
            own = [f.name for f in fields(event) if f.name not in ("at_s", "kind")]
            details = ", ".join(f"{name}={getattr(event, name)!r}" for name in own)
            print(f"{event.at_s * 1000:8.1f} ms  {event.kind:<16} {details}")


if __name__ == "__main__":
    asyncio.run(main())
