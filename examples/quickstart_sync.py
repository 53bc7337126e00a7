"""Quick start, sync: list the mesh's models and stream an answer with its timed events.

Run a mesh first, e.g. ``meshcore up`` (a router on http://127.0.0.1:8080 and three local
workers on the bundled Gemma 3 270M), then ``python examples/quickstart_sync.py``.
``MESHCORE_ROUTER_URL`` points at another router; ``MESHCORE_MODEL`` names another model.
"""

from __future__ import annotations

import os

from meshcore_sdk import Client

MODEL = os.environ.get("MESHCORE_MODEL", "gemma-3-270m")


def main() -> None:
    with Client() as client:  # the router: MESHCORE_ROUTER_URL, then http://127.0.0.1:8080
        for model in client.models.list():
            ready = model.meshcore.ready_nodes if model.meshcore else "?"
            print(f"model {model.id}: {ready} worker(s) ready")

        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Name three colours."}],
            max_tokens=32,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        with stream:
            for chunk in stream:
                print(chunk.text, end="", flush=True)  # the last chunk carries only usage
        print()

        for event in stream.events:
            print(f"{event.at_s * 1000:8.1f} ms  {event.kind}")
        if stream.usage is not None:
            print(f"{stream.usage.prompt_tokens} prompt tokens, {stream.usage.completion_tokens} generated")


if __name__ == "__main__":
    main()
