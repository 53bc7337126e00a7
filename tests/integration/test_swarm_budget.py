"""The router's hedging budget on a real mesh: a spent budget turns a swarm into one worker's stream.

The copies go through the router's frame stream (proxy legs), where the router places them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from meshcore_sdk import AsyncClient, ClientConfig, Mode
from meshcore_sdk.config import SwarmOptions
from meshcore_sdk.events import Failover, LeaderElected, WorkerPaused
from meshcore_sdk.mesh import LocalMesh

from .conftest import mesh_config
from .test_swarm import MAX_TOKENS, MODEL, PROMPT, Answer, collect

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.integration, pytest.mark.model]


async def test_with_the_routers_budget_spent_a_swarm_of_three_completes_on_one_worker(model_path: Path) -> None:
    # A one-token bucket and a node with one slot: the first hedge finds no free slot (refused,
    # and the bucket drops to 0), the second finds the budget spent; the primary runs as ever.
    async with LocalMesh(mesh_config(model_path, nodes=0, hedge_budget_max_tokens=1.0)) as mesh:
        await mesh.start_node("node-0", "--max-in-flight", "1")
        async with asyncio.timeout(120):
            await mesh.wait_ready(1)
        answer = await proxy_legged_swarm(mesh)
        async with httpx.AsyncClient(base_url=mesh.router_url, timeout=10) as http:
            metrics = (await http.get("/metrics")).text
            hedging = (await http.get("/mesh/v1/status")).json()["hedging"]
    assert answer.text and set(answer.workers) == {"node-0"}
    assert answer.seqs == list(range(len(answer.seqs)))
    kinds = [type(event) for event in answer.events]
    assert kinds.count(LeaderElected) == 1 and WorkerPaused not in kinds and Failover not in kinds
    assert "meshcore_hedges_placed_total 0.0" in metrics
    assert 'meshcore_hedges_refused_total{reason="capacity"} 1.0' in metrics
    assert 'meshcore_hedges_refused_total{reason="budget"} 1.0' in metrics
    assert (hedging["allows_hedges"], hedging["refused_budget"], hedging["refused_capacity"]) == (False, 1, 1)


async def proxy_legged_swarm(mesh: LocalMesh) -> Answer:
    config = ClientConfig(router_url=mesh.router_url, mode=Mode.SWARM, swarm_size=3, swarm=SwarmOptions(legs="proxy"))
    async with AsyncClient.from_config(config) as client:
        stream = await client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=MAX_TOKENS, stream=True, temperature=0
        )
        return await collect(stream)
