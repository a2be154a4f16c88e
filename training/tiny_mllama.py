"""A tiny random-weight Mllama (the architecture of Llama-3.2-Vision and of the LLaVA-CoT checkpoint).

vLLM 0.32 has no Mllama, so this model exercises the transformers engine (`--engine hf`). Same
idea as the embedded Idefics3 model (training/tiny_model.py): deterministic, a few hundred thousand
parameters, the shared byte-level BPE tokenizer, gibberish output. What is Mllama-specific:
Llama-3.2-Vision's special tokens and chat template style, one 56-pixel image tile, and a text
model whose second layer is a cross-attention layer over the image.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from training.tiny_model import SEED, build_tokenizer

BUILDER_VERSION = 1
IMAGE_SIZE = 56
MAX_POSITIONS = 4096

BOS = "<|begin_of_text|>"
EOT = "<|eot_id|>"
PAD = "<|finetune_right_pad_id|>"
IMAGE = "<|image|>"
SPECIAL_TOKENS = [BOS, EOT, PAD, IMAGE, "<|start_header_id|>", "<|end_header_id|>", "<|python_tag|>"]

# Llama-3.2-Vision's chat format: role headers, <|image|> where the image goes, <|eot_id|> ends a turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|image|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def build_config(tokenizer):
    from transformers import MllamaConfig

    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in (BOS, EOT, PAD, IMAGE)}
    vision_config = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_global_layers": 1,
        "attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": 14,
        "max_num_tiles": 1,
        "supported_aspect_ratios": [[1, 1]],
        "intermediate_layers_indices": [0],
        "vision_output_dim": 64,  # hidden_size x (1 + len(intermediate_layers_indices))
    }
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 3,
        "cross_attention_layers": [1],
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": MAX_POSITIONS,
        "bos_token_id": ids[BOS],
        "eos_token_id": ids[EOT],
        "pad_token_id": ids[PAD],  # inside the vocabulary (the stock one is a Llama-3 id)
    }
    config = MllamaConfig(vision_config=vision_config, text_config=text_config, image_token_index=ids[IMAGE])
    config.architectures = ["MllamaForConditionalGeneration"]
    return config


def build_processor(tokenizer):
    from transformers import MllamaProcessor
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    image_processor = MllamaImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, max_image_tiles=1)
    return MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


def build_tiny_mllama(out_dir: str | os.PathLike) -> Path:
    """Write the tiny Mllama (weights, config, tokenizer, processor, chat template) to `out_dir`."""
    import torch
    from transformers import GenerationConfig, MllamaForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(SPECIAL_TOKENS, CHAT_TEMPLATE, bos=BOS, eos=EOT, pad=PAD, image=IMAGE)
    config = build_config(tokenizer)
    torch.manual_seed(SEED)
    model = MllamaForConditionalGeneration(config).float().eval()
    text = config.text_config
    model.generation_config = GenerationConfig(
        bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id
    )
    model.save_pretrained(out)
    build_processor(tokenizer).save_pretrained(out)
    (out / "llava_o1.json").write_text(
        json.dumps({"builder": "tiny-mllama", "version": BUILDER_VERSION, "seed": SEED}, indent=2) + "\n"
    )
    return out
