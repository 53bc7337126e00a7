"""The official ``openai`` client against a Meshcore router, unchanged: whole, streamed, with usage.

Run a mesh first, e.g. ``meshcore up`` (a router on http://127.0.0.1:8080 and three local
workers on the bundled Gemma 3 270M), then ``python examples/openai_client.py``.
``MESHCORE_ROUTER_URL`` points at another router; ``MESHCORE_MODEL`` names another model.
"""

from __future__ import annotations

import os

from openai import OpenAI

ROUTER_URL = os.environ.get("MESHCORE_ROUTER_URL", "http://127.0.0.1:8080").rstrip("/")
MODEL = os.environ.get("MESHCORE_MODEL", "gemma-3-270m")


def main() -> None:
    client = OpenAI(base_url=f"{ROUTER_URL}/v1", api_key=os.environ.get("MESHCORE_API_KEY", "unused"))

    print("models:", [model.id for model in client.models.list()])

    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16, temperature=0
    )
    print("whole:", repr(completion.choices[0].message.content), completion.usage)

    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=32,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    print("streamed: ", end="")
    for chunk in stream:
        if chunk.choices:
            print(chunk.choices[0].delta.content or "", end="", flush=True)
        if chunk.usage is not None:
            print(f"\n{chunk.usage.prompt_tokens} prompt tokens, {chunk.usage.completion_tokens} generated")


if __name__ == "__main__":
    main()
