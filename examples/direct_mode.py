"""Direct mode: the client streams a completion over a WebRTC data channel straight to the worker.

This example starts its own local mesh (a router and one worker on the bundled Gemma 3 270M; it
needs the ``node``, ``router``, ``direct`` and ``demo`` extras) and stops it at the end, so no
``meshcore up`` is needed: ``python examples/direct_mode.py``.

The router only grants a ticket and passes the offer and answer along; the tokens travel over the
data channel.  ICE skips loopback addresses unless told otherwise, so both sides here gather their
host candidates on 127.0.0.1: the node through ``MeshConfig.ice_host_addresses`` (``meshcore node
--ice-host-address``), the client through ``DirectOptions.host_addresses``.  Across machines, leave
both unset and every interface is used.
"""

from __future__ import annotations

import asyncio
from dataclasses import fields

from meshcore_sdk import AsyncClient, ClientConfig, DirectConnected, Mode
from meshcore_sdk.config import DirectOptions
from meshcore_sdk.mesh import LocalMesh, MeshConfig

MODEL = "gemma-3-270m"  # the model the local mesh's node serves
PROMPT = "1, 2, 3, 4, 5,"
LOOPBACK = ("127.0.0.1",)  # where both sides gather ICE host candidates on this machine


async def main() -> None:
    print("starting a local mesh: a router and one worker ...")
    mesh_config = MeshConfig(nodes=1, node_threads=1, n_ctx=1024, ice_host_addresses=LOOPBACK)
    async with LocalMesh(mesh_config) as mesh:
        config = ClientConfig(
            router_url=mesh.router_url, mode=Mode.DIRECT, direct=DirectOptions(host_addresses=LOOPBACK)
        )
        async with AsyncClient.from_config(config) as client:
            stream = await client.completions.create(
                model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0, stream=True
            )
            text = ""
            async with stream:
                async for chunk in stream:
                    text += chunk.text

        print(f"prompt: {PROMPT!r}")
        print(f"answer: {text!r}")
        print(f"finish: {stream.finish_reason}; worker {stream.worker_id}")
        for event in stream.events:  # worker_assigned, direct_connected, first_token, finished, ...
            own = [f.name for f in fields(event) if f.name not in ("at_s", "kind")]
            details = ", ".join(f"{name}={getattr(event, name)!r}" for name in own)
            print(f"{event.at_s * 1000:8.1f} ms  {event.kind:<16} {details}")
        connected = next(event for event in stream.events if isinstance(event, DirectConnected))
        path = "a TURN relay" if connected.relay else "the direct path"
        print(f"data channel to {connected.worker_id} over {path}, open after {connected.setup_s * 1000:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
