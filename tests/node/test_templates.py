"""Chat templates: the GGUF's own when it has one, the family's fallback when not."""

from __future__ import annotations

import pytest

from meshcore_node.engine.templates import template_for
from meshcore_sdk.protocol import ChatMessage
from meshcore_sdk.protocol.errors import BadRequest


def messages(*turns: tuple[str, str]) -> list[ChatMessage]:
    return [ChatMessage(role=role, content=content) for role, content in turns]  # type: ignore[arg-type]


def test_gemma_fallback_folds_the_system_prompt_into_the_first_user_turn() -> None:
    template = template_for({"general.architecture": "gemma3"}, bos_token="<bos>", eos_token="<eos>")
    prompt = template.render(messages(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"), ("user", "Bye")))
    assert template.name == "gemma3"
    assert prompt == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_developer_is_read_as_system() -> None:
    template = template_for({"general.architecture": "gemma3"}, bos_token="", eos_token="")
    assert template.render(messages(("developer", "Rule"), ("user", "Q"))).startswith("<start_of_turn>user\nRule\n\nQ")


def test_unknown_family_gets_chatml() -> None:
    template = template_for({"general.architecture": "mystery"}, bos_token="", eos_token="")
    assert template.name == "chatml"
    assert template.render(messages(("user", "Hi"))) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_embedded_template_wins() -> None:
    metadata = {"general.architecture": "gemma3", "tokenizer.chat_template": "{{ messages[0]['content'] }}!"}
    template = template_for(metadata, bos_token="", eos_token="")
    assert (template.name, template.render(messages(("user", "Hi")))) == ("gguf", "Hi!")


def test_a_template_that_refuses_raises_bad_request() -> None:
    metadata = {"tokenizer.chat_template": "{{ raise_exception('roles must alternate') }}"}
    with pytest.raises(BadRequest, match="roles must alternate"):
        template_for(metadata, bos_token="", eos_token="").render(messages(("user", "Hi")))


def test_templates_run_sandboxed() -> None:
    metadata = {"tokenizer.chat_template": "{{ messages.__class__.__mro__ }}"}
    with pytest.raises(BadRequest):
        template_for(metadata, bos_token="", eos_token="").render(messages(("user", "Hi")))
