"""Direct mode (direct path and TURN relay) against proxy mode and the engine alone, in the same run.

For each mode, on the bundled Gemma 3 270M with greedy decoding from the same prompt:

* engine: the node's engine child process driven directly (``EngineSupervisor``), the floor;
* proxy: ``AsyncClient(mode="proxy")`` through the router's HTTP/SSE API;
* direct: ``AsyncClient(mode="direct")`` over a WebRTC data channel, host <-> host on loopback;
* relayed: the same with ``force_relay`` (only TURN relay candidates), through coturn on loopback;
* blocked: direct mode with every packet between the client's and the node's address dropped (nft
  rules, removed at the end; needs root), so that ICE falls back to the relay by itself.

Target (issue 4): with the direct path blocked the first token arrives no later than 100 ms plus
relay setup after it would have arrived directly, that is ``TTFT(blocked) - TTFT(direct) <= 100 ms +
(setup(relayed) - setup(direct))``, medians of the same run.

It reports connection setup (offer to open data channel, direct modes only), time to first token and
decode tokens/s, median and spread over the runs.  The router and the node run in this process (the
engine is its own child process, as always); coturn is started from ``--turnserver`` when found.
The client gathers on 127.0.0.2 and the node on 127.0.0.3, as in the tests.  Usage::

    .venv/bin/python benchmarks/direct.py [--runs 5] [--max-tokens 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from meshcore_node.config import NodeConfig
from meshcore_node.daemon import Node
from meshcore_node.engine.ipc import EngineConfig, EngineMessage
from meshcore_node.engine.supervisor import EngineSupervisor
from meshcore_node.models import bundled_model_path, inspect_model
from meshcore_node.status import EngineState
from meshcore_router import RouterConfig, create_app
from meshcore_router.direct import check_turn
from meshcore_router.server import serve
from meshcore_sdk import AsyncClient, ClientConfig, DirectConnected
from meshcore_sdk.config import DirectOptions, Mode
from meshcore_sdk.protocol import Backoff, DoneFrame, ErrorFrame, GenerateFrame, SamplingParams, TokenFrame

PROMPT = "The history of the printing press begins"
CLIENT_IP, NODE_IP = "127.0.0.2", "127.0.0.3"
SECRET = "meshcore-bench-secret"


@contextlib.contextmanager
def blocked_direct_path() -> Iterator[None]:
    """Drop every packet between the client's and the node's address, both ways; always removed."""
    nft = shutil.which("nft")
    if nft is None or os.geteuid() != 0:
        raise PermissionError("blocking the direct path needs root and nft")
    table = f"meshcore_bench_{os.getpid()}"
    script = (
        f"add table inet {table}\n"
        f"add chain inet {table} out {{ type filter hook output priority 0 ; }}\n"
        f"add rule inet {table} out ip saddr {CLIENT_IP} ip daddr {NODE_IP} drop\n"
        f"add rule inet {table} out ip saddr {NODE_IP} ip daddr {CLIENT_IP} drop\n"
    )
    subprocess.run([nft, "-f", "-"], input=script, text=True, check=True)
    try:
        yield
    finally:
        subprocess.run([nft, "delete", "table", "inet", table], check=False)


@dataclass(frozen=True)
class Run:
    setup_s: float | None
    ttft_s: float
    tokens: int
    decode_s: float
    relay: bool = False

    @property
    def tokens_per_s(self) -> float:
        return (self.tokens - 1) / self.decode_s if self.tokens > 1 and self.decode_s > 0 else 0.0


async def engine_runs(model_path: Path, *, runs: int, max_tokens: int, threads: int) -> list[Run]:
    messages: asyncio.Queue[EngineMessage] = asyncio.Queue()
    states: asyncio.Queue[EngineState] = asyncio.Queue()
    engine = EngineSupervisor(
        EngineConfig(model_path=str(model_path), n_ctx=1024, n_threads=threads),
        on_message=messages.put_nowait,
        on_state_change=states.put_nowait,
        restart_backoff=Backoff(initial_s=0.1, max_s=1.0),
        rng=random.Random(0),
    )
    results = []
    async with asyncio.TaskGroup() as group:
        task = group.create_task(engine.run())
        while await states.get() is not EngineState.READY:
            pass
        for index in range(runs + 1):  # the first run warms up
            params = SamplingParams(max_tokens=max_tokens, temperature=0)
            started = time.perf_counter()
            await engine.submit(GenerateFrame(request_id=f"e-{index}", model="x", prompt=PROMPT, params=params))
            first = last = None
            tokens = 0
            while not isinstance(message := await messages.get(), DoneFrame | ErrorFrame):
                if isinstance(message, TokenFrame):
                    last = time.perf_counter()
                    first = first or last
                    tokens += 1
            if index and first and last:
                results.append(Run(None, first - started, tokens, last - first))
        task.cancel()
    return results


async def client_runs(client: AsyncClient, *, runs: int, max_tokens: int) -> list[Run]:
    results = []
    for index in range(runs + 1):
        started = time.perf_counter()
        stream = await client.completions.create(
            model="gemma-3-270m", prompt=PROMPT, stream=True, max_tokens=max_tokens, temperature=0
        )
        first = last = None
        tokens = 0
        async with stream:
            async for chunk in stream:
                if chunk.meshcore is not None and chunk.meshcore.seq is not None:
                    last = time.perf_counter()
                    first = first or last
                    tokens += 1
        connected = [event for event in stream.events if isinstance(event, DirectConnected)]
        setups = [event.setup_s for event in connected]
        if index and first and last:
            relay = bool(connected) and connected[0].relay
            results.append(Run(setups[0] if setups else None, first - started, tokens, last - first, relay))
    return results


@contextlib.contextmanager
def coturn(binary: str | None) -> Iterator[str | None]:
    if binary is None:
        yield None
        return
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workdir = Path(tempfile.mkdtemp(prefix="meshcore-coturn-"))
    process = subprocess.Popen(
        [
            binary,
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={port}",
            "--min-port=49160",
            "--max-port=49400",
            "--use-auth-secret",
            f"--static-auth-secret={SECRET}",
            "--realm=meshcore.bench",
            "--allow-loopback-peers",
            "--no-multicast-peers",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--no-rfc5780",
            "--fingerprint",
            f"--userdb={workdir / 'turndb'}",
            f"--pidfile={workdir / 'pid'}",
            f"--log-file={workdir / 'turn.log'}",
            "--simple-log",
            "--no-stdout-log",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"turn:127.0.0.1:{port}?transport=udp"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.asynccontextmanager
async def mesh(model_path: Path, turn_url: str | None, threads: int) -> AsyncIterator[str]:
    urls = (turn_url,) if turn_url else ()
    config = RouterConfig(port=0, turn_urls=urls, turn_secret=SECRET if urls else None, turn_health_interval_s=1.0)
    app = create_app(config)
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    async with asyncio.TaskGroup() as group:
        server = group.create_task(serve(config, app=app, ready=ready.set_result))
        url = await ready
        node_config = NodeConfig(
            router_url=url,
            node_id="bench-node",
            model_path=model_path,
            n_ctx=1024,
            n_threads=threads,
            ice_host_addresses=(NODE_IP,),
        )
        node = group.create_task(Node(node_config, inspect_model(model_path)).run())
        router, direct = app.state.router, app.state.direct
        async with asyncio.timeout(180):
            await router.wait_until(lambda registry: registry.ready_count(now=router.clock()) > 0)
            if urls:
                await direct.wait_turn_healthy()
        try:
            yield url
        finally:
            node.cancel()
            server.cancel()


def report(name: str, runs: list[Run]) -> None:
    if not runs:
        print(f"{name:8s}  no runs")
        return
    ttft = [run.ttft_s * 1000 for run in runs]
    rate = [run.tokens_per_s for run in runs]
    setups = [run.setup_s * 1000 for run in runs if run.setup_s is not None]
    setup = f"{statistics.median(setups):7.1f} ms" if setups else "      -   "
    print(
        f"{name:8s}  setup {setup}  TTFT {statistics.median(ttft):7.1f} ms (min {min(ttft):6.1f}, "
        f"max {max(ttft):6.1f})  {statistics.median(rate):6.1f} tok/s (min {min(rate):5.1f})  n={len(runs)}"
        f"  relayed {sum(run.relay for run in runs)}/{len(runs)}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--turnserver", default=shutil.which("turnserver"))
    args = parser.parse_args()
    model_path = bundled_model_path()
    results = {
        "engine": await engine_runs(model_path, runs=args.runs, max_tokens=args.max_tokens, threads=args.threads)
    }
    with coturn(args.turnserver) as turn_url:
        if turn_url:
            async with asyncio.timeout(10):
                while not await check_turn(turn_url, timeout_s=0.5):  # noqa: ASYNC110  # coturn is starting
                    await asyncio.sleep(0.1)
        async with mesh(model_path, turn_url, args.threads) as url:
            modes = {
                "proxy": ClientConfig(router_url=url, mode=Mode.PROXY),
                "direct": ClientConfig(
                    router_url=url,
                    mode=Mode.DIRECT,
                    direct=DirectOptions(host_addresses=(CLIENT_IP,), workers=1, min_connect_deadline_s=2.0),
                ),
            }
            if turn_url:
                modes["relayed"] = ClientConfig(
                    router_url=url,
                    mode=Mode.DIRECT,
                    direct=DirectOptions(
                        host_addresses=(CLIENT_IP,), workers=1, min_connect_deadline_s=2.0, force_relay=True
                    ),
                )
            for name, config in modes.items():
                async with AsyncClient.from_config(config) as client:
                    results[name] = await client_runs(client, runs=args.runs, max_tokens=args.max_tokens)
            if turn_url:
                with contextlib.suppress(PermissionError), blocked_direct_path():
                    async with AsyncClient.from_config(modes["direct"]) as client:
                        results["blocked"] = await client_runs(client, runs=args.runs, max_tokens=args.max_tokens)
    print(f"Gemma 3 270M, {args.max_tokens} tokens, {args.threads} threads, {args.runs} runs after one warm-up")
    for name, runs in results.items():
        report(name, runs)
    if {"direct", "relayed", "blocked"} <= results.keys():
        fallback_target(results)


def fallback_target(results: dict[str, list[Run]]) -> None:
    """How late the first token comes with the direct path blocked, against the target."""

    def median_ms(runs: list[Run], value: str) -> float:
        return 1000 * statistics.median(getattr(run, value) for run in runs if getattr(run, value) is not None)

    late = median_ms(results["blocked"], "ttft_s") - median_ms(results["direct"], "ttft_s")
    relay_setup = median_ms(results["relayed"], "setup_s") - median_ms(results["direct"], "setup_s")
    allowed = 100 + relay_setup
    verdict = "met" if late <= allowed else "missed"
    print(
        f"blocked path: first token {late:.1f} ms later than direct; allowed 100 ms + relay setup "
        f"{relay_setup:.1f} ms = {allowed:.1f} ms ({late / allowed:.2f}x, {verdict})"
    )


if __name__ == "__main__":
    asyncio.run(main())
