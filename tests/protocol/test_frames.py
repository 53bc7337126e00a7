"""Frame validation: the constraints of docs/protocol.md §3 and §4 that the schemas enforce."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from meshcore_sdk.protocol import (
    ChatMessage,
    CommandFrame,
    CommandKind,
    GenerateFrame,
    ModelInfo,
    PauseFrame,
    SamplingParams,
    TokenFrame,
    Usage,
)

SHA = "8d654c4e6d6d78a61fa7b5fafdee5248b4c4f1efedc0f50d2ed3f33b9f9bc77c"
HI = [ChatMessage(role="user", content="Hi")]


def problems(model: type[BaseModel], /, **fields: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Validate ``fields`` as ``model``: the (location, error type) of every problem, [] when valid."""
    try:
        model.model_validate(fields)
    except ValidationError as exc:
        return [(tuple(error["loc"]), error["type"]) for error in exc.errors()]
    return []


# --- generate: exactly one input (§3.1) --------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        pytest.param({"prompt": "Once upon"}, [], id="prompt"),
        pytest.param({"prompt": ""}, [], id="empty-prompt"),
        pytest.param({"messages": HI}, [], id="messages"),
        pytest.param({}, [((), "value_error")], id="neither"),
        pytest.param({"prompt": "Once upon", "messages": HI}, [((), "value_error")], id="both"),
        pytest.param({"messages": []}, [(("messages",), "too_short")], id="no-messages"),
        pytest.param(
            {"messages": [{"role": "robot", "content": "Hi"}]}, [(("messages", 0, "role"), "literal_error")], id="role"
        ),
    ],
)
def test_generate_needs_exactly_one_of_prompt_and_messages(inputs: dict[str, Any], expected: list[Any]) -> None:
    """A generate carries a raw prompt or chat messages, never both and never neither."""
    assert problems(GenerateFrame, request_id="r-1", model="gemma-3-270m", **inputs) == expected


def test_generate_defaults_follow_the_openai_api() -> None:
    """Unset sampling parameters take OpenAI's defaults, and the first attempt is 0."""
    frame = GenerateFrame(request_id="r-1", model="gemma-3-270m", prompt="Hi")

    assert (frame.params, frame.attempt, frame.lora) == (
        SamplingParams(
            max_tokens=256, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, repeat_penalty=1.0, seed=None, stop=[]
        ),
        0,
        None,
    )


# --- usage ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt_tokens", "completion_tokens", "total_tokens", "expected"),
    [
        (27, 3, 30, []),
        (0, 0, 0, []),
        (27, 3, 31, [((), "value_error")]),
        (27, 3, 3, [((), "value_error")]),
        (-1, 3, 2, [(("prompt_tokens",), "greater_than_equal")]),
    ],
)
def test_usage_total_is_the_sum_of_its_parts(
    prompt_tokens: int, completion_tokens: int, total_tokens: int, expected: list[Any]
) -> None:
    """total_tokens must equal prompt_tokens + completion_tokens, and no count is negative."""
    assert (
        problems(Usage, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=total_tokens)
        == expected
    )


# --- sampling bounds --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("max_tokens", 1, None),
        ("max_tokens", 131_072, None),
        ("max_tokens", 0, "greater_than_equal"),
        ("max_tokens", 131_073, "less_than_equal"),
        ("temperature", 0.0, None),
        ("temperature", 2.0, None),
        ("temperature", -0.01, "greater_than_equal"),
        ("temperature", 2.01, "less_than_equal"),
        ("top_p", 1e-9, None),
        ("top_p", 1.0, None),
        ("top_p", 0.0, "greater_than"),
        ("top_p", 1.01, "less_than_equal"),
        ("top_k", 0, None),
        ("top_k", 40, None),
        ("top_k", -1, "greater_than_equal"),
        ("min_p", 0.0, None),
        ("min_p", 1.0, None),
        ("min_p", -0.01, "greater_than_equal"),
        ("min_p", 1.01, "less_than_equal"),
        ("repeat_penalty", 10.0, None),
        ("repeat_penalty", 0.0, "greater_than"),
        ("repeat_penalty", 10.01, "less_than_equal"),
        ("seed", 0, None),
        ("seed", 2**63 - 1, None),
        ("seed", -1, "greater_than_equal"),
        ("seed", 2**63, "less_than"),
    ],
)
def test_sampling_parameters_are_bounded(field: str, value: float, expected: str | None) -> None:
    """Each sampling parameter accepts its closed or open range and refuses one step outside it."""
    assert problems(SamplingParams, **{field: value}) == ([] if expected is None else [((field,), expected)])


@pytest.mark.parametrize("field", ["temperature", "top_p", "min_p", "repeat_penalty"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_sampling_parameters_refuse_non_finite_numbers(field: str, value: float) -> None:
    """NaN and the infinities fall outside every bounded float parameter."""
    assert [location for location, _ in problems(SamplingParams, **{field: value})] == [(field,)]


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        pytest.param(["\n\n"] * 16, [], id="sixteen"),
        pytest.param(["x" * 256], [], id="longest"),
        pytest.param(["\n\n"] * 17, [(("stop",), "too_long")], id="seventeen"),
        pytest.param([""], [(("stop", 0), "string_too_short")], id="empty"),
        pytest.param(["ok", "x" * 257], [(("stop", 1), "string_too_long")], id="too-long"),
    ],
)
def test_stop_strings_are_bounded(stop: list[str], expected: list[Any]) -> None:
    """At most 16 stop strings, each 1 to 256 characters."""
    assert problems(SamplingParams, stop=stop) == expected


# --- identifiers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_id", "valid"),
    [
        ("r-1", True),
        ("a.b:c_d-9", True),
        ("x" * 128, True),
        ("", False),
        ("x" * 129, False),
        ("r 1", False),
        ("r/1", False),
        ("ключ", False),
        ("r-1\n", False),
    ],
)
def test_request_ids_are_short_and_url_safe(request_id: str, valid: bool) -> None:
    """A request id is 1 to 128 of ``A-Za-z0-9._:-``, with no trailing newline slipping through."""
    assert (problems(PauseFrame, request_id=request_id) == []) is valid


@pytest.mark.parametrize(
    ("digest", "valid"),
    [
        (SHA, True),
        (SHA.upper(), False),
        (SHA[:-1], False),
        (SHA + "0", False),
        (f"sha256:{SHA}", False),
        (SHA[:-1] + "g", False),
        (SHA + "\n", False),
    ],
)
def test_sha256_fields_take_64_lowercase_hex_digits(digest: str, valid: bool) -> None:
    """Every file hash on the wire (model, LoRA, command target) is bare lowercase hex."""
    outcomes = [
        problems(ModelInfo, sha256=digest, served_name="gemma-3-270m", n_ctx=4096, size_bytes=1) == [],
        problems(GenerateFrame, request_id="r-1", model="m", prompt="p", lora=digest) == [],
        problems(CommandFrame, command=CommandKind.UNLOAD, model_sha256=digest) == [],
    ]

    assert outcomes == [valid] * 3


# --- frames are values ------------------------------------------------------------------


def test_frames_are_frozen() -> None:
    """A frame cannot be changed after it is built, so one frame can be shared by many readers."""
    frame = PauseFrame(request_id="r-1")

    with pytest.raises(ValidationError):
        frame.request_id = "r-2"  # type: ignore[misc]


def test_token_bytes_are_raw_in_python() -> None:
    """``text_bytes`` holds the token's bytes as given, even half a character; base64 is only the wire form."""
    frame = TokenFrame(request_id="r-1", seq=0, token_id=1, text_bytes=b"\xe2\x82", t_worker=0.0)

    assert frame.text_bytes == b"\xe2\x82"
