"""Swarm mode on a real local mesh: failover gap, TTFT with a straggler, and the cost of speculation.

Three nodes (separate processes, the bundled Gemma 3 270M) behind one router.  Measured in one run:

* baseline: one worker through the router (proxy mode): TTFT and the inter-token gap;
* failover: a swarm of 3 whose leader is SIGKILLed after ``--kill-at`` tokens; the failover gap is the
  time from the old leader's last token to the new leader's first, against the median normal gap;
* straggler: one node made 10x slower by the node's fault layer (each token frame delayed by 9x the
  measured gap); p99 TTFT of a swarm of 3 against p99 TTFT of a healthy single worker;
* speculation cost: worker-seconds the followers spend before they are paused or released, per request,
  against the leader's.

The swarm measures run for each kind of legs asked for (``--legs``, both by default): direct legs
(a WebRTC data channel per copy, host to host on 127.0.0.1) and proxy legs (the router's frame
stream).  On direct legs a killed leader is noticed only as a stall (nothing tells the client over
UDP); on proxy legs the router sees its link drop at once.

Usage::

    .venv/bin/python benchmarks/swarm.py [--runs 10] [--max-tokens 48] [--legs direct proxy]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import time
from dataclasses import dataclass, field

from meshcore_node.models import bundled_model_path
from meshcore_sdk import AsyncClient, ClientConfig
from meshcore_sdk.config import DirectOptions, Mode, SwarmOptions
from meshcore_sdk.events import Failover, WorkerPaused
from meshcore_sdk.mesh import LocalMesh, MeshConfig

PROMPT = "1, 2, 3, 4, 5,"
MODEL = "gemma-3-270m"
LOOPBACK = ("127.0.0.1",)


@dataclass
class Run:
    ttft_s: float
    token_times_s: list[float] = field(default_factory=list)
    workers: list[str] = field(default_factory=list)
    events: list[object] = field(default_factory=list)

    def gaps_s(self) -> list[float]:
        return [b - a for a, b in zip(self.token_times_s, self.token_times_s[1:], strict=False)]


async def one(mesh: LocalMesh, mode: str, max_tokens: int, *, kill_at: int = 0, legs: str = "direct") -> Run:
    config = ClientConfig(
        router_url=mesh.router_url,
        mode=Mode(mode),
        swarm_size=3,
        max_retries=0,
        direct=DirectOptions(host_addresses=LOOPBACK),
        swarm=SwarmOptions(legs=legs),  # type: ignore[arg-type]
    )
    async with AsyncClient.from_config(config) as client:
        started = time.perf_counter()
        stream = await client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=max_tokens, temperature=0, stream=True
        )
        run = Run(ttft_s=0.0)
        async with stream:
            async for chunk in stream:
                if chunk.meshcore.seq is None:
                    continue
                now = time.perf_counter()
                run.ttft_s = run.ttft_s or now - started
                run.token_times_s.append(now)
                run.workers.append(chunk.meshcore.worker_id)
                if kill_at and len(run.workers) == kill_at:
                    mesh.nodes[chunk.meshcore.worker_id].send_signal(signal.SIGKILL)
        run.events = list(stream.events)
    return run


async def restore(mesh: LocalMesh) -> None:
    for node_id, process in list(mesh.nodes.items()):
        if process.returncode is not None:
            await mesh.start_node(node_id)
    await mesh.wait_ready(len(mesh.nodes), node_ids=list(mesh.nodes))


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def speculation_ratio(run: Run) -> float:
    """Followers' worker-seconds before their pause or release, over the leader's whole stream."""
    # a follower computes until its pause (prefill and first token); a paused one costs memory, not compute
    follower_s = sum(e.at_s for e in run.events if isinstance(e, WorkerPaused))
    leader_s = run.events[-1].at_s  # type: ignore[attr-defined]
    return follower_s / leader_s


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--kill-at", type=int, default=20)
    parser.add_argument("--legs", nargs="+", choices=("direct", "proxy"), default=["direct", "proxy"])
    args = parser.parse_args()
    config = MeshConfig(
        nodes=3,
        model_path=bundled_model_path(),
        n_ctx=1024,
        node_threads=1,
        heartbeat_interval_s=0.2,
        ice_host_addresses=LOOPBACK,
    )
    healthy: dict[str, list[Run]] = {}
    failovers: dict[str, list[float]] = {}
    straggler: dict[str, list[Run]] = {}
    async with LocalMesh(config) as mesh:
        await one(mesh, "proxy", 4)  # warm every path once
        for legs in args.legs:
            await one(mesh, "swarm", 4, legs=legs)
        single = [await one(mesh, "proxy", args.max_tokens) for _ in range(args.runs)]
        gap_s = statistics.median(g for run in single for g in run.gaps_s())
        for legs in args.legs:
            healthy[legs] = [await one(mesh, "swarm", args.max_tokens, legs=legs) for _ in range(args.runs)]
            failovers[legs] = []
            for _ in range(args.runs):
                run = await one(mesh, "swarm", args.max_tokens, kill_at=args.kill_at, legs=legs)
                assert any(isinstance(e, Failover) for e in run.events)
                failovers[legs].append(run.gaps_s()[args.kill_at - 1])
                await restore(mesh)

        slow = mesh.nodes.pop("node-2")
        slow.send_signal(signal.SIGTERM)
        await slow.wait()
        await mesh.start_node("node-2", "--fault-token-delay-ms", f"{9 * gap_s * 1000:.0f}")
        await mesh.wait_ready(3, node_ids=list(mesh.nodes))
        for legs in args.legs:
            straggler[legs] = [await one(mesh, "swarm", args.max_tokens, legs=legs) for _ in range(args.runs)]

    print(f"\nGemma 3 270M Q4_K_M, 3 nodes x 1 thread on 2 cores, greedy, {args.max_tokens} tokens, {args.runs} runs\n")
    print("| measure | value |\n|---|---|")
    print(
        f"| single worker: TTFT p50 / p99 | {statistics.median(r.ttft_s for r in single) * 1000:.0f} / "
        f"{p99([r.ttft_s for r in single]) * 1000:.0f} ms |"
    )
    print(f"| single worker: median inter-token gap | {gap_s * 1000:.1f} ms |")
    for legs in args.legs:
        report(legs, single, healthy[legs], failovers[legs], straggler[legs], gap_s)


def report(
    legs: str, single: list[Run], healthy: list[Run], failovers: list[float], straggler: list[Run], gap_s: float
) -> None:
    p50_ms, p99_ms = statistics.median(r.ttft_s for r in healthy) * 1000, p99([r.ttft_s for r in healthy]) * 1000
    print(f"| {legs} legs: swarm of 3, healthy: TTFT p50 / p99 | {p50_ms:.0f} / {p99_ms:.0f} ms |")
    print(
        f"| {legs} legs: failover gap (leader SIGKILLed) p50 / max | {statistics.median(failovers) * 1000:.0f} / "
        f"{max(failovers) * 1000:.0f} ms |"
    )
    print(
        f"| {legs} legs: failover gap / normal gap (p50, max) | {statistics.median(failovers) / gap_s:.2f}x, "
        f"{max(failovers) / gap_s:.2f}x (target <= 3x) |"
    )
    ratio = p99([r.ttft_s for r in straggler]) / p99([r.ttft_s for r in single])
    print(f"| {legs} legs: one node 10x slower: swarm TTFT p99 / healthy single p99 | {ratio:.2f}x (target <= 1.2x) |")
    ratio = p99([r.ttft_s for r in straggler]) / p99([r.ttft_s for r in healthy])
    print(f"| {legs} legs: one node 10x slower: swarm TTFT p99 / healthy swarm p99 | {ratio:.2f}x |")
    speculation = statistics.median(map(speculation_ratio, healthy))
    print(f"| {legs} legs: speculation: follower worker-seconds / leader's | {speculation:.3f} |")


if __name__ == "__main__":
    asyncio.run(main())
