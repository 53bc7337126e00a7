"""The batching engine against its baselines, on the same model, in the same run.

Measures, greedy (temperature 0), the same prompt family and token count throughout:

* ``raw``: llama-cpp-python's ``Llama.generate`` in this process, one stream (the single-stream floor);
* ``engine x1``: the node's engine child (through its supervisor, as the daemon runs it), one stream;
* ``bare x8``: a bare ``llama_decode`` loop over one batch of 8 sequences (the batching ceiling);
* ``engine x8``: the engine child with 8 concurrent streams (aggregate tokens/s, TTFT p50/p95);
* ``server x8``: ``python -m llama_cpp.server --interrupt_requests False`` (with the AMX guard, through
  ``benchmarks/llama_server_guarded.py``) driven by the ``openai`` client with 8 concurrent streams;
* memory per paused sequence: the bytes ``llama_state_seq_get_data`` gives for a prompt plus its tokens.

Targets (issue 3): engine x1 >= 95% of raw; engine x8 >= 4x server x8 and >= 80% of bare x8; engine x8
TTFT p95 < 1 s.  Usage::

    .venv/bin/python benchmarks/engine.py [--runs 3] [--max-tokens 128] [--threads 2] [--skip-server]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meshcore_node.engine.batch import ContextConfig, LlamaBatchContext
from meshcore_node.engine.guard import load_llama
from meshcore_node.engine.ipc import EngineConfig, EngineMessage
from meshcore_node.engine.supervisor import EngineSupervisor
from meshcore_node.models import bundled_model_path
from meshcore_node.status import EngineState
from meshcore_sdk.protocol import (
    Backoff,
    DoneFrame,
    ErrorFrame,
    GenerateFrame,
    SamplingParams,
    TokenFrame,
)

PROMPTS = [
    "The history of the printing press begins",
    "Once upon a time in a small village",
    "The most important idea in physics is",
    "A recipe for bread starts with",
    "The ocean covers most of the planet and",
    "In the year 1800 the city of London",
    "Good software is written by people who",
    "The mountain trail climbed slowly toward",
]
N_CTX = 4096


@dataclass(frozen=True)
class Result:
    name: str
    tokens_per_s: float
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None

    def line(self) -> str:
        ttft = "" if self.ttft_p50_s is None else f"  TTFT p50 {self.ttft_p50_s:.3f} s  p95 {self.ttft_p95_s:.3f} s"
        return f"{self.name:<12} {self.tokens_per_s:8.1f} tokens/s{ttft}"


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


# --- baselines ----------------------------------------------------------------------------


def raw_single(model: Path, max_tokens: int, threads: int) -> float:
    llm = load_llama(model, n_ctx=N_CTX, n_threads=threads)
    prompt = llm.tokenize(PROMPTS[0].encode(), add_bos=True, special=False)
    next(iter(llm.generate(prompt, temp=0.0, top_k=0, top_p=1.0, min_p=0.0)))  # warm up, as the engine's self-test
    llm.reset()  # type: ignore[no-untyped-call]
    start = time.perf_counter()
    produced = 0
    for _ in llm.generate(prompt, temp=0.0, top_k=0, top_p=1.0, min_p=0.0, reset=True):
        produced += 1
        if produced >= max_tokens:
            break
    elapsed = time.perf_counter() - start
    del llm
    return produced / elapsed


def bare_batch(model: Path, max_tokens: int, threads: int, width: int = 8) -> float:
    ctx = LlamaBatchContext(ContextConfig(model_path=model, n_ctx=N_CTX, n_slots=width, n_threads=threads))
    try:
        prompts = [ctx.tokenize(p.encode(), add_bos=True) for p in PROMPTS[:width]]
        start = time.perf_counter()
        rows = ctx.decode([(slot, ids, 0, True) for slot, ids in enumerate(prompts)])
        last = [int(np.argmax(row)) for row in rows if row is not None]
        positions = [len(ids) for ids in prompts]
        for _ in range(max_tokens - 1):
            rows = ctx.decode([(slot, [last[slot]], positions[slot], True) for slot in range(width)])
            last = [int(np.argmax(row)) for row in rows if row is not None]
            positions = [p + 1 for p in positions]
        elapsed = time.perf_counter() - start
    finally:
        ctx.close()
    return width * max_tokens / elapsed


# --- the engine, through its supervisor -----------------------------------------------------


async def engine_streams(model: Path, max_tokens: int, threads: int, width: int) -> Result:
    arrivals: asyncio.Queue[tuple[float, EngineMessage]] = asyncio.Queue()
    ready = asyncio.Event()

    def on_state(state: EngineState) -> None:
        if state is EngineState.READY:
            ready.set()

    supervisor = EngineSupervisor(
        EngineConfig(model_path=str(model), n_ctx=N_CTX, n_threads=threads, max_sequences=max(width, 8)),
        on_message=lambda message: arrivals.put_nowait((time.perf_counter(), message)),
        on_state_change=on_state,
        restart_backoff=Backoff(initial_s=0.1, max_s=1.0),
        rng=random.Random(0),
    )
    task = asyncio.create_task(supervisor.run())
    try:
        await ready.wait()
        start = time.perf_counter()
        for i in range(width):
            frame = GenerateFrame(
                request_id=f"b{i}",
                model="sha256:" + "0" * 64,
                prompt=PROMPTS[i % len(PROMPTS)],
                params=SamplingParams(max_tokens=max_tokens, temperature=0),
            )
            await supervisor.submit(frame)
        first: dict[str, float] = {}
        tokens = 0
        done = 0
        while done < width:
            at, message = await arrivals.get()
            if isinstance(message, TokenFrame):
                tokens += 1
                first.setdefault(message.request_id, at - start)
            elif isinstance(message, DoneFrame | ErrorFrame):
                done += 1
        elapsed = time.perf_counter() - start
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    ttfts = list(first.values())
    return Result(f"engine x{width}", tokens / elapsed, statistics.median(ttfts), p95(ttfts))


# --- llama_cpp.server ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def server_streams(model: Path, max_tokens: int, threads: int, width: int) -> Result:
    from openai import AsyncOpenAI

    port = free_port()
    launcher = Path(__file__).with_name("llama_server_guarded.py")
    args = [sys.executable, str(launcher), "--model", str(model), "--interrupt_requests", "False"]
    args += ["--n_ctx", str(N_CTX), "--n_threads", str(threads), "--port", str(port), "--host", "127.0.0.1"]
    server = await asyncio.create_subprocess_exec(*args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=600)
    try:
        for _ in range(600):
            try:
                await client.models.list()
                break
            except Exception:
                await asyncio.sleep(0.2)
        start = time.perf_counter()

        async def one(i: int) -> tuple[float, int]:
            ttft = -1.0
            count = 0
            stream = await client.completions.create(
                model=str(model), prompt=PROMPTS[i % len(PROMPTS)], max_tokens=max_tokens, temperature=0, stream=True
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].text:
                    count += 1
                    if ttft < 0:
                        ttft = time.perf_counter() - start
            return ttft, count

        results = await asyncio.gather(*(one(i) for i in range(width)))
        elapsed = time.perf_counter() - start
    finally:
        await client.close()
        server.terminate()
        await server.wait()
    ttfts = [ttft for ttft, _ in results]
    tokens = sum(count for _, count in results)
    return Result(f"server x{width}", tokens / elapsed, statistics.median(ttfts), p95(ttfts))


# --- memory ------------------------------------------------------------------------------


def paused_bytes(model: Path, max_tokens: int, threads: int) -> tuple[int, int]:
    ctx = LlamaBatchContext(ContextConfig(model_path=model, n_ctx=N_CTX, n_slots=2, n_threads=threads))
    try:
        ids = ctx.tokenize(PROMPTS[0].encode(), add_bos=True)
        ids = (ids * (1 + max_tokens // len(ids)))[: len(ids) + max_tokens]
        ctx.decode([(0, ids[: ctx.config.n_batch], 0, False)])
        return len(ids[: ctx.config.n_batch]), ctx.state_size(0)
    finally:
        ctx.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--skip-server", action="store_true", help="leave out the llama_cpp.server baseline")
    args = parser.parse_args()
    model = bundled_model_path()
    results: dict[str, list[Result]] = {}
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs}", flush=True)
        batch = [
            Result("raw x1", raw_single(model, args.max_tokens, args.threads)),
            asyncio.run(engine_streams(model, args.max_tokens, args.threads, 1)),
            Result(f"bare x{args.width}", bare_batch(model, args.max_tokens, args.threads, args.width)),
            asyncio.run(engine_streams(model, args.max_tokens, args.threads, args.width)),
        ]
        if not args.skip_server:
            batch.append(asyncio.run(server_streams(model, args.max_tokens, args.threads, args.width)))
        for result in batch:
            print("  " + result.line(), flush=True)
            results.setdefault(result.name, []).append(result)
    medians = {name: statistics.median(r.tokens_per_s for r in rs) for name, rs in results.items()}
    print("\nmedians over runs:")
    for name, value in medians.items():
        print(f"  {name:<12} {value:8.1f} tokens/s")
    w = args.width
    print("\ntargets:")
    print(f"  engine x1 / raw x1        = {medians['engine x1'] / medians['raw x1']:.2f}  (>= 0.95)")
    print(f"  engine x{w} / bare x{w}      = {medians[f'engine x{w}'] / medians[f'bare x{w}']:.2f}  (>= 0.80)")
    if f"server x{w}" in medians:
        print(f"  engine x{w} / server x{w}    = {medians[f'engine x{w}'] / medians[f'server x{w}']:.2f}  (>= 4)")
    worst_p95 = max(r.ttft_p95_s or 0.0 for r in results[f"engine x{w}"])
    print(f"  engine x{w} TTFT p95 (worst run) = {worst_p95:.3f} s  (< 1)")
    tokens, size = paused_bytes(model, args.max_tokens, args.threads)
    print(f"\nmemory per paused sequence: {size} bytes for {tokens} tokens ({size / tokens:.0f} bytes/token)")


if __name__ == "__main__":
    main()
