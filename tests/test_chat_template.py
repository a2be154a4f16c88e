"""Prompt rendering from the model's own chat template."""

from __future__ import annotations

import pytest
from helpers import shapes_image
from transformers import AutoProcessor

from models.chat_template import ChatTemplateRenderer
from models.engine import ChatMessage, ChatPart


@pytest.fixture(scope="module")
def renderer(tiny_model_dir):
    return ChatTemplateRenderer.from_pretrained(str(tiny_model_dir))


def test_images_become_the_templates_placeholders_in_order(renderer):
    first, second = shapes_image((255, 0, 0)), shapes_image((0, 0, 255))
    messages = [ChatMessage("user", (ChatPart.of_image(first), ChatPart.of_text("Compare"), ChatPart.of_image(second)))]
    prompt = renderer.render(messages)
    assert prompt.images == (first, second)
    assert prompt.text.count("<image>") == 2
    assert prompt.text.index("Compare") < prompt.text.rindex("<image>")


def test_generation_prompt_opens_the_assistant_turn(renderer, tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")]
    expected = processor.apply_chat_template(
        [
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        ],
        add_generation_prompt=True,
    )
    assert renderer.render(messages).text == expected


@pytest.mark.parametrize("prefix", ["<SUMMARY>", "<SUMMARY> plan </SUMMARY>\n\n<CAPTION> ", "<REASONING>\n"])
def test_assistant_prefix_is_continued_exactly(renderer, prefix):
    plain = renderer.render([ChatMessage("user", "Hi")]).text
    continued = renderer.render([ChatMessage("user", "Hi")], assistant_prefix=prefix).text
    assert continued.endswith(prefix)
    # The open assistant turn is the same one a generation prompt would open.
    assert continued.startswith(plain)
    assert "<end_of_utterance>" not in continued[len(plain) :]


def test_a_model_without_chat_template_is_refused():
    class Bare:
        chat_template = None

    with pytest.raises(ValueError, match="chat template"):
        ChatTemplateRenderer(Bare())
