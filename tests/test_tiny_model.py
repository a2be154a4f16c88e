"""The embedded tiny model: deterministic, loadable by transformers, stage tags are plain text."""

from __future__ import annotations

import hashlib

import torch
from helpers import shapes_image
from transformers import AutoModelForImageTextToText, AutoProcessor, Idefics3ForConditionalGeneration

from training.tiny_model import build_tiny_model


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_is_deterministic(tiny_model_dir, tmp_path):
    again = build_tiny_model(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja"):
        assert digest(tiny_model_dir / name) == digest(again / name), name


def test_transformers_loads_and_generates_with_an_image(tiny_model_dir):
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    assert isinstance(model, Idefics3ForConditionalGeneration)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[[shapes_image()]], return_tensors="pt")
    torch.manual_seed(0)
    out = model.generate(
        **inputs, max_new_tokens=6, do_sample=True, num_return_sequences=3, pad_token_id=model.config.pad_token_id
    )
    assert out.shape == (3, inputs["input_ids"].shape[1] + 6) or out.shape[0] == 3


def test_stage_tags_are_ordinary_text(tiny_model_dir):
    tokenizer = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer
    special = set(tokenizer.all_special_ids)
    for tag in ("<SUMMARY>", "</SUMMARY>", "<CAPTION>", "<REASONING>", "<CONCLUSION>"):
        ids = tokenizer.encode(tag, add_special_tokens=False)
        assert not special & set(ids), tag
        assert tokenizer.decode(ids) == tag


def test_judge_answers_are_single_tokens(tiny_model_dir):
    tokenizer = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer
    for option in ("1", "2", "A", "B", "C", "D"):
        assert len(tokenizer.encode(option, add_special_tokens=False)) == 1


def test_the_cached_default_model_is_rebuilt_when_the_builder_changes(tmp_path, monkeypatch):
    import json

    from training import tiny_model

    monkeypatch.setenv("LLAVA_O1_CACHE", str(tmp_path))
    path = tiny_model.ensure_default_model()
    marker = path / "llava_o1.json"
    stale = {**json.loads(marker.read_text()), "version": -1}
    marker.write_text(json.dumps(stale))
    assert tiny_model.ensure_default_model() == path
    assert json.loads(marker.read_text())["version"] == tiny_model.BUILDER_VERSION
