"""Hypothesis strategies and settings shared by the protocol tests."""

from __future__ import annotations

import string
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from meshcore_sdk.protocol import ChatMessage, GenerateFrame, SamplingParams, TokenFrame

# Deterministic (derandomized), no deadline: the suite shares two cores with a compiler.
PROPERTY = settings(max_examples=150, deadline=None, derandomize=True)

request_ids = st.text(string.ascii_letters + string.digits + "._:-", min_size=1, max_size=32)
sha256s = st.text("0123456789abcdef", min_size=64, max_size=64)
counts = st.integers(min_value=0, max_value=2**40)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)

# Text rich in the characters a depth scan must skip inside strings.
tricky_text = st.text(st.sampled_from('[]{}"\\,:ab é€\n') | st.characters(), max_size=12)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | finite_floats | tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=24,
)

token_frames = st.builds(
    TokenFrame,
    request_id=request_ids,
    attempt=counts,
    seq=counts,
    token_id=counts,
    text_bytes=st.binary(max_size=48),
    t_worker=st.floats(min_value=0, allow_nan=False, allow_infinity=False),
)

sampling_params = st.builds(
    SamplingParams,
    max_tokens=st.integers(1, 131_072),
    temperature=st.floats(0.0, 2.0),
    top_p=st.floats(0.0, 1.0, exclude_min=True),
    top_k=counts,
    min_p=st.floats(0.0, 1.0),
    repeat_penalty=st.floats(0.0, 10.0, exclude_min=True),
    seed=st.none() | st.integers(0, 2**63 - 1),
    stop=st.lists(st.text(min_size=1, max_size=8), max_size=4),
)

chat_messages = st.builds(
    ChatMessage,
    role=st.sampled_from(["system", "developer", "user", "assistant", "tool"]),
    content=st.text(max_size=40),
    name=st.none() | st.text(max_size=8),
)

_inputs = st.one_of(
    st.fixed_dictionaries({"prompt": st.text(max_size=60)}),
    st.fixed_dictionaries({"messages": st.lists(chat_messages, min_size=1, max_size=4)}),
)

generate_frames = st.builds(
    lambda fields, inputs: GenerateFrame(**fields, **inputs),
    st.fixed_dictionaries(
        {
            "request_id": request_ids,
            "model": st.text(min_size=1, max_size=24) | sha256s.map("sha256:{}".format),
            "params": sampling_params,
            "lora": st.none() | sha256s,
            "attempt": counts,
        }
    ),
    _inputs,
)
