"""A LangChain tool loop on Meshcore: the model may call a tool, we run it and send the result back.

Needs the ``langchain`` extra (``pip install 'meshcore[langchain]'``). Run a mesh first, e.g.
``meshcore up`` (a router on http://127.0.0.1:8080 and three local workers on the bundled
Gemma 3 270M), then ``python examples/langchain_agent.py``. ``MESHCORE_ROUTER_URL`` points at
another router; ``MESHCORE_MODEL`` names another model.

The router constrains tool calls with a grammar, so even a small model returns well-formed calls;
with ``tool_choice="auto"`` (the default) it may answer in text instead, which ends the loop. A
router without such a grammar may answer in prose at once: the loop then ends after one turn.
"""

from __future__ import annotations

import os

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool

from meshcore_sdk.langchain import ChatMeshcore

MODEL = os.environ.get("MESHCORE_MODEL", "gemma-3-270m")
MAX_TURNS = 3


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


TOOLS = {"multiply": multiply}


def main() -> None:
    llm = ChatMeshcore(model=MODEL, max_tokens=64, temperature=0)  # MESHCORE_ROUTER_URL, then 127.0.0.1:8080
    agent = llm.bind_tools(list(TOOLS.values()))
    history: list[BaseMessage] = [
        SystemMessage("Use the multiply tool for arithmetic."),
        HumanMessage("What is 6 times 7?"),
    ]
    calls = 0
    for _ in range(MAX_TURNS):
        reply = agent.invoke(history)
        assert isinstance(reply, AIMessage)
        history.append(reply)
        if not reply.tool_calls:
            break
        for call in reply.tool_calls:
            result = TOOLS[call["name"]].invoke(call)  # a ToolMessage answering this call
            history.append(result)
            calls += 1
            print(f"tool {call['name']}({call['args']}) -> {result.content}")

    if calls == 0:
        print("no tool call came back: the model answered without the tool.")
    final = history[-1]
    print("answer:", final.content)
    if isinstance(final, AIMessage) and final.usage_metadata:
        usage, model = final.usage_metadata, final.response_metadata["model_name"]
        print(f"tokens: {usage['input_tokens']} in, {usage['output_tokens']} out ({model})")


if __name__ == "__main__":
    main()
