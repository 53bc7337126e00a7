"""Chat templates: render a conversation into the prompt text a model expects.

A GGUF usually embeds its Jinja chat template (``tokenizer.chat_template``); it
is rendered in a sandbox, as Hugging Face's tokenizers do.  Some GGUFs, the
bundled Gemma 3 270M among them, carry none: those get the template of their
architecture's family from :data:`FALLBACK_TEMPLATES`, never a generic format
that would silently give the model a prompt shape it was not trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from meshcore_sdk.protocol import ChatMessage
from meshcore_sdk.protocol.errors import BadRequest

__all__ = ["FALLBACK_TEMPLATES", "ChatTemplate", "template_for"]

_GEMMA: Final = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '')"
    " + message['content'] | trim + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

_CHATML: Final = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

FALLBACK_TEMPLATES: Final[Mapping[str, str]] = {
    "gemma": _GEMMA,
    "gemma2": _GEMMA,
    "gemma3": _GEMMA,
    "chatml": _CHATML,
}
"""Templates for GGUFs without one, by ``general.architecture`` (``chatml`` for the rest)."""


@dataclass(frozen=True)
class ChatTemplate:
    """A compiled chat template and the special tokens it may use.

    Attributes:
        name: where the template came from: ``gguf`` or a fallback family.
        source: the Jinja source.
        bos_token: the text of the beginning-of-sequence token.
        eos_token: the text of the end-of-sequence token.
    """

    name: str
    source: str
    bos_token: str
    eos_token: str

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """Render ``messages`` with a generation prompt for the assistant's turn.

        ``developer`` messages are read as ``system`` (OpenAI's newer name for it).

        Raises:
            BadRequest: the template refused the conversation (for example, roles out of order).
        """
        turns = [{"role": "system" if m.role == "developer" else m.role, "content": m.content} for m in messages]
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        environment.globals["raise_exception"] = _raise
        try:
            return environment.from_string(self.source).render(
                messages=turns,
                add_generation_prompt=True,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except TemplateError as exc:
            raise BadRequest(f"the model's chat template refused these messages: {exc}") from exc


def template_for(metadata: Mapping[str, str], *, bos_token: str, eos_token: str) -> ChatTemplate:
    """Pick the chat template for a model from its GGUF metadata."""
    embedded = metadata.get("tokenizer.chat_template")
    if embedded:
        return ChatTemplate("gguf", embedded, bos_token, eos_token)
    family = metadata.get("general.architecture", "")
    name = family if family in FALLBACK_TEMPLATES else "chatml"
    return ChatTemplate(name, FALLBACK_TEMPLATES[name], bos_token, eos_token)


def _raise(message: str) -> None:
    raise TemplateError(message)
