"""Proof of compute end to end: real router and nodes, the real model, a cheater among honest nodes.

The mesh: ``node-0`` is the operator's trusted auditor, ``node-1`` an honest worker, and
``cheat`` serves a layer-truncated copy of the model while claiming the real one's hash
(``--fault-claim-sha256``).  Every job is audited (``audit_rate=1``), and nodes on probation
or under escalation get shadow prompts, so the cheater's work is checked whether or not
clients happen to reach it.  Clients keep sending requests throughout and every one must
succeed; the cheater must end slashed, out of routing, with its balance frozen, and the
honest nodes untouched.  Then the router is SIGKILLed in the middle of audits and restarted
on the same ledger: every entry is still there, the chain verifies, the cheater stays banned.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from tests.integration.conftest import mesh_config

from meshcore_node.engine.variants import VariantKind, cached_variant
from meshcore_node.models import inspect_model
from meshcore_router.audits.ledger import canonical_json
from meshcore_sdk import AsyncClient
from meshcore_sdk.mesh import LocalMesh

pytestmark = [pytest.mark.timeout(600), pytest.mark.asyncio(loop_scope="session")]

AUDITOR, HONEST, CHEAT = "node-0", "node-1", "cheat"
PROMPTS = ("Name three colours.", "What is 2 + 2?", "Say hello in French.", "Count to five.")


@pytest.fixture(scope="session")
def cheater_model(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_variant(model_path, VariantKind.TRUNCATED, tmp_path_factory.mktemp("variants"))


@pytest_asyncio.fixture(loop_scope="session")
async def audited_mesh(model_path: Path, cheater_model: Path, tmp_path: Path) -> AsyncIterator[LocalMesh]:
    config = mesh_config(
        model_path,
        nodes=2,
        trusted_auditors=(AUDITOR,),
        audit_rate=1.0,
        shadow_interval_s=1.0,
        ledger_path=tmp_path / "ledger.sqlite",
    )
    real_sha256 = inspect_model(model_path).sha256
    async with LocalMesh(config) as mesh:
        await mesh.start_node(CHEAT, "--model", str(cheater_model), "--fault-claim-sha256", real_sha256)
        await mesh.wait_ready(3)
        yield mesh


async def audits_of(mesh: LocalMesh) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=mesh.router_url) as http:
        response = await http.get("/mesh/v1/audits")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


async def ledger_of(mesh: LocalMesh) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=mesh.router_url) as http:
        while True:
            response = await http.get("/mesh/v1/ledger", params={"after": len(entries), "limit": 1000})
            response.raise_for_status()
            page = response.json()["entries"]
            if not page:
                return entries
            entries += page


def assert_chain(entries: list[dict[str, Any]]) -> None:
    """Re-walk the hash chain from the published entries alone, as anyone can."""
    previous = "0" * 64
    for seq, entry in enumerate(entries, start=1):
        assert entry["seq"] == seq
        assert entry["prev_hash"] == previous
        columns = {
            "seq": entry["seq"],
            "at": entry["at"],
            "kind": entry["kind"],
            "node_id": entry["node_id"],
            "job_id": entry["job_id"],
            "amount_micro": entry["amount_micro"],
            "payload": json.loads(entry["payload_json"]),
            "idempotency_key": entry["idempotency_key"],
        }
        digest = hashlib.sha256(bytes.fromhex(previous) + canonical_json(columns).encode()).hexdigest()
        assert entry["hash"] == digest, f"entry {seq} does not hash to its recorded hash"
        previous = entry["hash"]


async def keep_asking(mesh: LocalMesh, stop: asyncio.Event, served_by: list[str]) -> int:
    """Clients' requests, one after another until ``stop``; every one must succeed."""
    done = 0
    async with AsyncClient(router_url=mesh.router_url, max_retries=3) as client:
        while not stop.is_set():
            answer = await client.chat.completions.create(
                model="gemma-3-270m",
                messages=[{"role": "user", "content": PROMPTS[done % len(PROMPTS)]}],
                max_tokens=24,
                temperature=0.0,
            )
            assert answer.choices[0].message.content
            served_by.append(answer.meshcore.worker_id)
            done += 1
    return done


async def wait_ledger(
    mesh: LocalMesh, predicate: Callable[[list[dict[str, Any]]], bool], *, timeout_s: float
) -> list[dict[str, Any]]:
    async with asyncio.timeout(timeout_s):
        while True:
            entries = await ledger_of(mesh)
            if predicate(entries):
                return entries
            await asyncio.sleep(0.5)


async def wait_standing(mesh: LocalMesh, node_id: str, standing: str, *, timeout_s: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        while True:
            audits = await audits_of(mesh)
            node = audits["nodes"].get(node_id)
            if node is not None and node["standing"] == standing:
                return audits
            await asyncio.sleep(0.5)


async def test_a_cheater_is_caught_slashed_and_routed_around(audited_mesh: LocalMesh) -> None:
    mesh = audited_mesh
    stop = asyncio.Event()
    served_by: list[str] = []
    clients = asyncio.create_task(keep_asking(mesh, stop, served_by))
    try:
        audits = await wait_standing(mesh, CHEAT, "slashed", timeout_s=300)
        slashed_after = len(served_by)
        await asyncio.sleep(5)  # clients go on; the slashed node must get none of it
    finally:
        stop.set()
    answered = await clients

    cheat = audits["nodes"][CHEAT]
    assert cheat["routing_weight"] == 0.0
    assert answered > slashed_after, "clients kept being served after the slash"
    assert CHEAT not in served_by[slashed_after + 1 :]
    entries = await ledger_of(mesh)
    assert_chain(entries)
    kinds = {(entry["kind"], entry["node_id"]) for entry in entries}
    assert ("slash", CHEAT) in kinds and ("freeze", CHEAT) in kinds
    assert ("slash", HONEST) not in kinds and ("slash", AUDITOR) not in kinds
    honest_audits = [e for e in entries if e["kind"] == "audit" and e["node_id"] == HONEST]
    assert honest_audits, "the honest worker was audited too"
    verdicts = [json.loads(entry["payload_json"])["verdict"] for entry in honest_audits]
    # never a flag; AMBIGUOUS (beyond the calibration's honest maximum, within 3x of it) is allowed
    assert all(verdict["outcome"] != "flag" for verdict in verdicts), verdicts
    final = await audits_of(mesh)
    assert final["nodes"][HONEST]["standing"] != "slashed"
    assert final["nodes"][HONEST]["balance"]["escrow_micro"] > 0


async def test_the_ledger_survives_a_router_killed_mid_audit(audited_mesh: LocalMesh) -> None:
    mesh = audited_mesh
    stop = asyncio.Event()
    clients = asyncio.create_task(keep_asking(mesh, stop, []))
    try:
        await wait_ledger(mesh, lambda entries: any(entry["kind"] == "audit" for entry in entries), timeout_s=120)
        await asyncio.sleep(1.0)  # audits and shadow prompts are in flight now
        before = await ledger_of(mesh)
        await mesh.restart_router(kill=True)
        await mesh.wait_ready(3)
    finally:
        stop.set()
    await asyncio.gather(clients, return_exceptions=True)  # the loop may have seen the router die: not the point

    after = await ledger_of(mesh)
    assert after[: len(before)] == before, "an entry written before the kill was lost or changed"
    assert_chain(after)
    async with asyncio.timeout(60):
        while len(await ledger_of(mesh)) <= len(after):
            async with AsyncClient(router_url=mesh.router_url, max_retries=5) as client:
                await client.chat.completions.create(
                    model="gemma-3-270m", messages=[{"role": "user", "content": "Hi"}], max_tokens=8
                )
    assert_chain(await ledger_of(mesh))
