"""Golden frames: every file in ``fixtures/`` parses and re-encodes to itself (docs/protocol.md §1)."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest

from meshcore_sdk.protocol import Frame, GenerateFrame, decode_frame, encode_frame

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_PATHS = sorted(FIXTURES.glob("*.json"))
FRAME_CLASSES = typing.get_args(typing.get_args(Frame)[0])


def canonical(text: str) -> str:
    """The compact form of JSON text, keys in the order written."""
    return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("path", FIXTURE_PATHS, ids=lambda path: path.stem)
def test_fixture_parses_and_reencodes_to_itself(path: Path) -> None:
    """A golden frame decodes to its type and encodes back to exactly its canonical JSON."""
    text = path.read_text(encoding="utf-8")

    frame = decode_frame(text)

    assert frame.type == path.stem.split("_")[0]
    assert encode_frame(frame) == canonical(text)


def test_every_frame_class_has_a_fixture() -> None:
    """Each member of the Frame union is covered by at least one golden file."""
    covered = {type(decode_frame(path.read_text(encoding="utf-8"))) for path in FIXTURE_PATHS}

    assert covered == set(FRAME_CLASSES)


def test_generate_fixtures_cover_both_inputs() -> None:
    """``generate`` has one golden file per input form (§3.1): chat messages and a raw prompt."""
    by_messages = decode_frame((FIXTURES / "generate_messages.json").read_text(encoding="utf-8"))
    by_prompt = decode_frame((FIXTURES / "generate_prompt.json").read_text(encoding="utf-8"))

    assert isinstance(by_messages, GenerateFrame)
    assert isinstance(by_prompt, GenerateFrame)
    assert (by_messages.prompt is None, by_messages.messages is None) == (True, False)
    assert (by_prompt.prompt is None, by_prompt.messages is None) == (False, True)
