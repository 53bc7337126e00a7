"""Proxy mode against raw llama-cpp-python on the same model, in the same run.

Measures time to first token (TTFT) and decode tokens/s for:

* raw: llama-cpp-python in this process (``Llama.generate``, AMX guard set), the floor any server pays;
* proxy: a real local mesh (router + one node, separate processes) driven by ``meshcore_sdk.AsyncClient``
  streaming ``/v1/completions`` over HTTP/SSE on loopback.

Both decode greedily (temperature 0) from the same prompt for the same number of tokens with the same
threads.  Raw runs before and after the mesh, and its two halves are pooled, so drift in the machine's speed
shows up as spread rather than as a bias.  Usage::

    .venv/bin/python benchmarks/proxy_vs_raw.py [--runs 5] [--max-tokens 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from llama_cpp import llama_cpp as native

from meshcore_node.engine.guard import load_llama
from meshcore_node.models import bundled_model_path
from meshcore_sdk import AsyncClient
from meshcore_sdk.mesh import LocalMesh, MeshConfig

PROMPT = "The history of the printing press begins"


@dataclass(frozen=True)
class Run:
    ttft_s: float
    tokens: int
    decode_s: float

    @property
    def tokens_per_s(self) -> float:
        return (self.tokens - 1) / self.decode_s


def raw_runs(model_path: Path, *, runs: int, max_tokens: int, threads: int) -> list[Run]:
    llm = load_llama(model_path, n_ctx=4096, n_threads=threads)
    prompt = llm.tokenize(PROMPT.encode(), add_bos=True, special=True)
    results = []
    for _ in range(runs):
        llm.reset()
        started = time.perf_counter()
        first = last = 0.0
        count = 0
        for token in llm.generate(prompt, temp=0.0, top_k=0, top_p=1.0, min_p=0.0):
            last = time.perf_counter()
            first = first or last
            count += 1
            if count >= max_tokens or native.llama_vocab_is_eog(llm._model.vocab, token):
                break
        results.append(Run(first - started, count, last - first))
    del llm
    gc.collect()
    return results


async def proxy_runs(router_url: str, *, runs: int, max_tokens: int) -> list[Run]:
    results = []
    async with AsyncClient(router_url=router_url, max_retries=0) as client:
        model = (await client.models.list()).data[0].id
        for _ in range(runs):
            started = time.perf_counter()
            first = last = 0.0
            count = 0
            stream = await client.completions.create(
                model=model, prompt=PROMPT, max_tokens=max_tokens, temperature=0, stream=True
            )
            async with stream:
                async for chunk in stream:
                    if chunk.meshcore is None or chunk.meshcore.seq is None:
                        continue
                    last = time.perf_counter()
                    first = first or last
                    count += 1
            results.append(Run(first - started, count, last - first))
    return results


def summary(name: str, runs: list[Run]) -> tuple[float, float]:
    ttft = statistics.median(run.ttft_s for run in runs)
    rate = statistics.median(run.tokens_per_s for run in runs)
    spread = max(run.tokens_per_s for run in runs) - min(run.tokens_per_s for run in runs)
    tokens = statistics.median(run.tokens for run in runs)
    print(f"| {name} | {len(runs)} | {tokens:.0f} | {ttft * 1000:.1f} | {rate:.1f} (spread {spread:.1f}) |")
    return ttft, rate


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model_path = bundled_model_path()

    raw = raw_runs(model_path, runs=args.runs, max_tokens=args.max_tokens, threads=args.threads)
    config = MeshConfig(nodes=1, model_path=model_path, node_threads=args.threads)
    async with LocalMesh(config) as mesh:
        await proxy_runs(mesh.router_url, runs=1, max_tokens=8)  # warm the node's prompt path
        proxy = await proxy_runs(mesh.router_url, runs=args.runs, max_tokens=args.max_tokens)
    raw += raw_runs(model_path, runs=args.runs, max_tokens=args.max_tokens, threads=args.threads)

    print(f"\nGemma 3 270M Q4_K_M, greedy, {args.max_tokens} tokens, {args.threads} threads, median of runs\n")
    print("| path | runs | tokens | TTFT ms | decode tokens/s |")
    print("|---|---|---|---|---|")
    raw_ttft, raw_rate = summary("raw llama-cpp-python, in process", raw)
    proxy_ttft, proxy_rate = summary("meshcore proxy (router + node, HTTP/SSE)", proxy)
    print(
        f"\nproxy / raw: TTFT {proxy_ttft / raw_ttft:.2f}x (+{(proxy_ttft - raw_ttft) * 1000:.1f} ms), "
        f"tokens/s {proxy_rate / raw_rate:.3f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
