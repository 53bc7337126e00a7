"""Swarm mode over direct legs: each copy on its own WebRTC data channel to a real node on the real model.

Three node processes gather ICE host candidates on 127.0.0.1, and so does the client, so the legs
connect on any machine, loopback only included, without a TURN server.  The prompt and the checks
are those of ``test_swarm.py`` (its prompt has a wide margin between the two likeliest tokens at
every position, so a follower's catch-up picks the leader's tokens).  A SIGKILLed leader's channel
does not close (nothing tells its peer over UDP), but the router sees the worker's link close and
tells the swarm through its watch (``/mesh/v1/nodes/watch``), so it fails over before any stall.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from meshcore_sdk import AsyncClient, ClientConfig, DirectConnected, RelayUsed
from meshcore_sdk.config import DirectOptions, Mode, SwarmOptions
from meshcore_sdk.events import Failover, LeaderElected, WorkerPaused
from meshcore_sdk.mesh import LocalMesh

from .conftest import mesh_config
from .test_swarm import MAX_TOKENS, MODEL, PROMPT, Answer, assert_exactly_once, collect, killer, reference, restore

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.integration,
    pytest.mark.model,
    pytest.mark.timeout(240),
]

LOOPBACK = ("127.0.0.1",)
KILL_RUNS = 3


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def direct_mesh(model_path: Path) -> AsyncIterator[LocalMesh]:
    async with LocalMesh(mesh_config(model_path, nodes=3, ice_host_addresses=LOOPBACK)) as mesh:
        yield mesh


def client(mesh: LocalMesh, swarm: SwarmOptions) -> AsyncClient:
    # a generous connect deadline: three nodes prefill on two busy cores while the legs come up
    config = ClientConfig(
        router_url=mesh.router_url,
        mode=Mode.SWARM,
        swarm_size=3,
        timeout_s=60,
        swarm=swarm,
        direct=DirectOptions(host_addresses=LOOPBACK, min_connect_deadline_s=2.0),
    )
    return AsyncClient.from_config(config)


async def swarm(mesh: LocalMesh, *, on_chunk: object = None, options: SwarmOptions | None = None) -> Answer:
    async with client(mesh, options or SwarmOptions(legs="direct")) as swarm_client:
        stream = await swarm_client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=MAX_TOKENS, stream=True, temperature=0
        )
        return await collect(stream, on_chunk=on_chunk)


async def test_a_swarm_over_direct_legs_streams_the_single_workers_text(direct_mesh: LocalMesh) -> None:
    expected = await reference(direct_mesh, temperature=0)

    answer = await swarm(direct_mesh, options=SwarmOptions())  # the default legs: direct, with aiortc installed

    assert_exactly_once(answer, expected)
    connected = [event for event in answer.events if isinstance(event, DirectConnected)]
    assert sorted(event.worker_id for event in connected) == sorted(direct_mesh.nodes), answer.events
    assert all((event.relay, event.local_candidate) == (False, "host") for event in connected)
    assert not any(isinstance(event, RelayUsed) for event in answer.events)
    kinds = [type(event) for event in answer.events]
    assert kinds.count(LeaderElected) == 1 and kinds.count(WorkerPaused) == 2 and Failover not in kinds
    assert len(set(answer.workers)) == 1


async def test_killing_the_leader_over_direct_legs_loses_and_repeats_nothing(direct_mesh: LocalMesh) -> None:
    expected = await reference(direct_mesh, temperature=0)
    seed = 20261126
    rng = random.Random(seed)
    print(f"seed {seed}")
    for run in range(KILL_RUNS):
        kill_at = rng.randint(1, MAX_TOKENS - 2)
        print(f"run {run}: SIGKILL the leader after {kill_at} tokens")
        kill, killed = killer(direct_mesh, kill_at)
        answer = await swarm(direct_mesh, on_chunk=kill)

        assert_exactly_once(answer, expected)
        failover = next(event for event in answer.events if isinstance(event, Failover))
        # the router saw the killed worker's link close and told the swarm, before any stall threshold
        assert failover.from_worker_id == killed[0] and "left the mesh" in failover.reason, failover
        assert killed[0] not in answer.workers[kill_at:]
        await restore(direct_mesh)
