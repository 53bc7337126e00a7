"""Every script in examples/ runs against a real local mesh, as a user would run it."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from meshcore_sdk.mesh import LocalMesh

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.timeout(120)]

EXAMPLES = Path(__file__).parents[2] / "examples"
EXPECTED = {
    "quickstart_sync.py": "first_token",
    "quickstart_async.py": "streamed:",
    "openai_client.py": "prompt tokens",
    "langchain_agent.py": "answer:",
    "swarm_failover.py": "failover",  # starts its own mesh of three workers and kills the leader
    "direct_mode.py": "relay=False",  # starts its own mesh of one worker and streams over a direct data channel
}


def test_every_example_is_covered() -> None:
    assert sorted(path.name for path in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_example_runs(name: str, shared_mesh: LocalMesh) -> None:
    if name == "langchain_agent.py":
        pytest.importorskip("langchain_core")
    env = {**os.environ, "MESHCORE_ROUTER_URL": shared_mesh.router_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / name),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(90):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode()
    assert process.returncode == 0, text
    assert EXPECTED[name] in text, text
