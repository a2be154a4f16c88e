"""Renders chat messages to prompt text with the model's own chat template (nothing model-specific here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from models.engine import ChatMessage, Prompt

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, ProcessorMixin


class ChatTemplateRenderer:
    """Wraps a Hugging Face processor (or tokenizer) and renders `ChatMessage`s to a `Prompt`.

    Images become the template's own image placeholder (`{"type": "image"}` parts), so the engine
    expands them exactly as the model was trained to see them.
    """

    def __init__(self, processor: ProcessorMixin | PreTrainedTokenizerBase):
        tokenizer = getattr(processor, "tokenizer", processor)
        # Some repositories keep the template on the processor, others only on the tokenizer.
        if getattr(processor, "chat_template", None):
            self._templater = processor
        elif getattr(tokenizer, "chat_template", None):
            self._templater = tokenizer
        else:
            raise ValueError("the model has no chat template (neither its processor nor its tokenizer)")

    @classmethod
    def from_pretrained(cls, model: str, **kwargs: Any) -> ChatTemplateRenderer:
        from transformers import AutoProcessor

        return cls(AutoProcessor.from_pretrained(model, **kwargs))

    def render(self, messages: Sequence[ChatMessage], assistant_prefix: str = "") -> Prompt:
        """Render `messages`; with `assistant_prefix`, leave an assistant turn open after that text."""
        if not messages:
            raise ValueError("at least one message is needed")
        conversation = [self._to_hf(m) for m in messages]
        images = tuple(
            p.image for m in messages if not isinstance(m.content, str) for p in m.content if p.image is not None
        )
        if assistant_prefix:
            conversation.append({"role": "assistant", "content": [{"type": "text", "text": assistant_prefix}]})
            text = self._apply(conversation, add_generation_prompt=False, continue_final_message=True)
            # transformers drops trailing whitespace of the continued message when the template
            # trims it; the search relies on the exact prefix, so put it back.
            stripped = assistant_prefix.rstrip()
            if text.endswith(stripped) and not text.endswith(assistant_prefix):
                text += assistant_prefix[len(stripped) :]
        else:
            text = self._apply(conversation, add_generation_prompt=True)
        return Prompt(text=text, images=images)

    def _apply(
        self, conversation: list[dict[str, Any]], *, add_generation_prompt: bool, continue_final_message: bool = False
    ) -> str:
        text = self._templater.apply_chat_template(
            conversation,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
        )
        assert isinstance(text, str)  # tokenize=False: one conversation in, its text out
        return text

    @staticmethod
    def _to_hf(message: ChatMessage) -> dict[str, Any]:
        if isinstance(message.content, str):
            parts = [{"type": "text", "text": message.content}]
        else:
            parts = [
                {"type": "image"} if p.type == "image" else {"type": "text", "text": p.text} for p in message.content
            ]
        return {"role": message.role, "content": parts}
