"""The judge's options are read in both spellings a model may write them: "1" and " 1"."""

from __future__ import annotations

import pytest

from models.option_tokens import OptionTokens


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from models.demo_weights import DEMO_DIR

    return AutoTokenizer.from_pretrained(DEMO_DIR)


def test_an_option_and_its_space_led_form_are_both_read(tokenizer):
    spellings = OptionTokens(tokenizer).spellings_of(["1", "2"])
    one, two = (tokenizer.encode(t, add_special_tokens=False) for t in ("1", "2"))
    spaced_one, spaced_two = (tokenizer.encode(t, add_special_tokens=False) for t in (" 1", " 2"))
    assert len(spaced_one) == len(spaced_two) == 1  # this tokenizer has both forms as one token
    assert sorted(zip(spellings.token_ids, spellings.owners, strict=True)) == sorted(
        [(one[0], 0), (two[0], 1), (spaced_one[0], 0), (spaced_two[0], 1)]
    )
    probabilities = [0.1 if owner == 0 else 0.2 for owner in spellings.owners]
    assert spellings.per_option(probabilities) == pytest.approx([0.2, 0.4])


def test_the_chat_template_puts_the_space_led_form_after_the_assistant_header(tokenizer):
    # Why both forms: a reply "1" is rendered "Assistant: 1", whose last token is " 1", not "1".
    from transformers import AutoProcessor

    from models.demo_weights import DEMO_DIR

    processor = AutoProcessor.from_pretrained(DEMO_DIR)
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Which?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "1"}]},
    ]
    prompt = processor.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    full = processor.apply_chat_template(messages, tokenize=False)
    reply = tokenizer.encode(full[len(prompt) :], add_special_tokens=False)
    assert reply[0] == tokenizer.encode(" 1", add_special_tokens=False)[0]


def test_an_option_that_is_one_token_only_when_space_led_is_read_in_that_form(tokenizer):
    # The pointwise verifier's "yes": two tokens for this tokenizer, " yes" one.
    assert len(tokenizer.encode("yes", add_special_tokens=False)) == 2
    spellings = OptionTokens(tokenizer).spellings_of(["yes", "no"])
    expected = [tokenizer.encode(t, add_special_tokens=False)[0] for t in (" yes", " no")]
    assert spellings.token_ids == expected and spellings.owners == [0, 1]


def test_an_option_that_is_not_one_token_is_refused(tokenizer):
    with pytest.raises(ValueError, match="one token"):
        OptionTokens(tokenizer).spellings_of(["1", "response two"])
