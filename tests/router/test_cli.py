"""``meshcore router`` / ``python -m meshcore_router``: the listening line, and a clean stop."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import httpx
import pytest
from click.testing import CliRunner

from meshcore_router.cli import router_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

LISTENING = re.compile(r"^meshcore router listening on (http://127\.0\.0\.1:(\d+))$")


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(router_command, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--heartbeat-interval-s"):
        assert option in result.output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_the_module_prints_its_real_port_and_stops_cleanly(signum: signal.Signals) -> None:
    env = {**os.environ, "MESHCORE_ROUTER_PORT": "0"}  # options also come from the environment
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshcore_router", stdout=asyncio.subprocess.PIPE, env=env
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            line = (await process.stdout.readline()).decode().strip()
        match = LISTENING.match(line)
        assert match, line
        assert int(match.group(2)) > 0
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{match.group(1)}/health")
        assert response.status_code == 503
        process.send_signal(signum)
        async with asyncio.timeout(30):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
