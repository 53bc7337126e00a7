"""The ``meshcore`` command as a user runs it."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from meshcore_sdk.cli import main
from meshcore_sdk.mesh import LocalMesh

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.integration, pytest.mark.model]


async def test_up_serves_a_mesh_that_chat_and_status_use_and_stops_on_sigint(model_path: Path) -> None:
    up = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meshcore_sdk.cli",
        "up",
        "--nodes",
        "1",
        "--port",
        "0",
        "--model",
        str(model_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert up.stdout is not None
    try:
        async with asyncio.timeout(120):
            while b"listening on" not in (line := await up.stdout.readline()):
                assert line, "meshcore up exited before it listened"
        url = line.decode().split("listening on ")[1].split()[0]
        status = await _meshcore("status", "--router", url, "--json")
        (node,) = json.loads(status)["nodes"]
        assert node["status"] == "READY"
        answer = await _meshcore("chat", "--router", url, "--max-tokens", "5", "Hello")
        assert answer.strip()
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= 3  # router, node, engine
    finally:
        up.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await up.communicate()
    assert up.returncode == 0
    assert not [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]


async def _meshcore(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshcore_sdk.cli", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, out
    return out.decode()


async def test_settings_come_from_flags_then_environment_then_config_file(
    tmp_path: Path, shared_mesh: LocalMesh
) -> None:
    dead = "http://127.0.0.1:9"  # nothing listens there
    config = tmp_path / "meshcore.toml"
    runner = CliRunner()

    config.write_text(f'[status]\nrouter = "{shared_mesh.router_url}"\n')
    assert (
        runner.invoke(main, ["--config", str(config), "status", "--json"], env={"MESHCORE_ROUTER_URL": None}).exit_code
        == 0
    )

    env = {"MESHCORE_ROUTER_URL": dead}
    assert runner.invoke(main, ["--config", str(config), "status", "--json"], env=env).exit_code != 0
    flag = runner.invoke(
        main, ["--config", str(config), "status", "--router", shared_mesh.router_url, "--json"], env=env
    )
    assert flag.exit_code == 0 and json.loads(flag.output)["nodes"]
