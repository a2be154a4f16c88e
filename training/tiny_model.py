"""Builds the embedded tiny vision-language model used by tests and by `llava-o1 serve`'s default.

The model is an Idefics3 architecture (a SigLIP-style vision tower, a pixel-shuffle connector and a
Llama text model) shrunk to a few hundred thousand parameters, with random weights from a fixed seed
and a byte-level BPE tokenizer trained here on a small built-in corpus. It is loadable by both
vLLM (CPU build) and transformers. It produces gibberish: it exists to exercise the real engine
and the serving path, not to answer questions.

Shapes follow what vLLM's CPU backend accepts: text attention heads of size 64 (the CPU attention
kernels reject 16), an image of 56x56 pixels in 14-pixel patches shuffled down to 4 image tokens.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

SEED = 1234
EMBEDDED_MODEL_NAME = "llava-o1-tiny"  # the name the embedded model is served under
# Bump when the builder's output changes: cached copies of an older build are rebuilt.
BUILDER_VERSION = 2
IMAGE_SIZE = 56
PATCH_SIZE = 14
SCALE_FACTOR = 2
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
VOCAB_SIZE = 1024
MAX_POSITIONS = 4096

BOS = "<|begin_of_text|>"
EOS = "<end_of_utterance>"
PAD = "<|pad|>"
IMAGE = "<image>"
FAKE_IMAGE = "<fake_token_around_image>"
GLOBAL_IMAGE = "<global-img>"
# Idefics3's processor looks these up even when it does not split images; they must exist.
ROW_COL = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
SPECIAL_TOKENS = [BOS, EOS, PAD, IMAGE, FAKE_IMAGE, GLOBAL_IMAGE, *ROW_COL]

# Idefics3-style chat template: "User:<image> question<end_of_utterance>\nAssistant: ...".
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}:"
    "{% if message['content'] is string %} {{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %} {{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

# Text the tokenizer learns its merges from: chat roles, the stage tags, and plain English, so
# tags and common words become a few tokens each (they stay ordinary text, not special tokens).
_CORPUS = [
    "User: Assistant: System:",
    "<SUMMARY> </SUMMARY> <CAPTION> </CAPTION> <REASONING> </REASONING> <CONCLUSION> </CONCLUSION>",
    "I will look at the image, describe what matters, reason step by step and then answer.",
    "The image shows a red circle, a blue square and two green triangles on a white background.",
    "How many objects are there? Which color is the most frequent? Answer with the option letter.",
    "First count the shapes, then compare the counts, and conclude. The answer is B.",
    "Response 1 is better because it outlines the approach. I choose response 2.",
    "Since the caption is accurate and thorough, the reasoning is correct and consistent.",
    "0 1 2 3 4 5 6 7 8 9 A B C D yes no",
    # Instruction and judge wording, so the prompts a search builds stay short for this model.
    "Answer in four stages, each inside its tags and in this order: how you will approach the question,",
    "what in the image matters for the question, step-by-step reasoning toward the answer,",
    "the final answer only (for multiple choice, the option).",
    "Two candidate sections were written for this question about the image. Question: The answer so far:",
    "A better one is one where it outlines how the question will be approached, without already doing",
    "the analysis or the math; it describes the image details that matter for the question thoroughly",
    "and accurately, without general commentary; its logic and calculations are correct and follow from",
    "the description of the image; it states the final answer directly, consistent with the reasoning,",
    "and does not refuse to answer. Compare two candidate sections continuing the answer above.",
    'Say which is better: answer 1 or 2, or explain and end with "I choose response 1" or',
    '"I choose response 2". The better response is answers reasons correctly from ends in',
]


@dataclass(frozen=True)
class TinyShape:
    """Sizes of a tiny Idefics3; the default is the embedded test model."""

    image_size: int = IMAGE_SIZE
    vision_hidden: int = 64
    vision_layers: int = 2
    text_layers: int = 2
    corpus: tuple[str, ...] = ()  # more text for the tokenizer to learn its merges from
    text_hidden: int = 128
    text_heads: int = 2  # of text_hidden // text_heads each: vLLM's CPU attention takes 32, 64, 80, ...
    # Whole strings the tokenizer keeps as one token each, wherever they stand (not special tokens).
    added_tokens: tuple[str, ...] = ()

    @property
    def image_seq_len(self) -> int:
        return (self.image_size // PATCH_SIZE) ** 2 // SCALE_FACTOR**2


def build_tokenizer(
    special_tokens: list[str] | None = None,
    chat_template: str = CHAT_TEMPLATE,
    *,
    bos: str = BOS,
    eos: str = EOS,
    pad: str = PAD,
    image: str = IMAGE,
    extra_corpus: tuple[str, ...] = (),
    added_tokens: tuple[str, ...] = (),
):
    """Train a byte-level BPE tokenizer on the built-in corpus and wrap it for transformers."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=special_tokens or SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((_CORPUS + list(extra_corpus)) * 4, trainer=trainer)
    if added_tokens:
        tokenizer.add_tokens([AddedToken(text, normalized=False, special=False) for text in added_tokens])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        extra_special_tokens={"image_token": image},
        chat_template=chat_template,
        model_max_length=MAX_POSITIONS,
    )


def build_config(tokenizer, shape: TinyShape = TinyShape()):
    """The Idefics3 configuration: tiny vision tower, a Llama with 64-wide heads."""
    from transformers import Idefics3Config

    vocab_size = len(tokenizer)
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in (BOS, EOS, PAD, IMAGE)}
    text_config = {
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": shape.text_hidden,
        "intermediate_size": 2 * shape.text_hidden,
        "num_hidden_layers": shape.text_layers,
        "num_attention_heads": shape.text_heads,
        "num_key_value_heads": shape.text_heads,
        "head_dim": shape.text_hidden // shape.text_heads,
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": 1e-5,
        "bos_token_id": ids[BOS],
        "eos_token_id": ids[EOS],
        # Inside the vocabulary: Idefics3's default pad id (128002) crashes batched sampling.
        "pad_token_id": ids[PAD],
        "tie_word_embeddings": False,
    }
    vision_config = {
        "model_type": "idefics3_vision",
        "hidden_size": shape.vision_hidden,
        "intermediate_size": 2 * shape.vision_hidden,
        "num_hidden_layers": shape.vision_layers,
        "num_attention_heads": 2,
        "image_size": shape.image_size,
        "patch_size": PATCH_SIZE,
    }
    config = Idefics3Config(  # type: ignore[call-arg]  # bos and eos go to PretrainedConfig's **kwargs
        text_config=text_config,
        vision_config=vision_config,
        scale_factor=SCALE_FACTOR,
        image_token_id=ids[IMAGE],
        pad_token_id=ids[PAD],
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        tie_word_embeddings=False,
    )
    config.architectures = ["Idefics3ForConditionalGeneration"]
    return config


def build_processor(tokenizer, shape: TinyShape = TinyShape()):
    """Idefics3 processor on the PIL image processor (works without torchvision), no splitting."""
    from transformers import Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": shape.image_size},
        max_image_size={"longest_edge": shape.image_size},
    )
    return Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=shape.image_seq_len,
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_model(out_dir: str | os.PathLike, shape: TinyShape = TinyShape(), seed: int = SEED) -> Path:
    """Write the tiny model (weights, config, tokenizer, processor, chat template) to `out_dir`.

    Deterministic: the same files (weights bit for bit) on every call with the same seed; another
    seed gives another model of the same shape and tokenizer (the tests' second model, a judge).
    """
    import torch
    from transformers import GenerationConfig, Idefics3ForConditionalGeneration

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(extra_corpus=shape.corpus, added_tokens=shape.added_tokens)
    config = build_config(tokenizer, shape)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).float().eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    model.save_pretrained(out)
    build_processor(tokenizer, shape).save_pretrained(out)
    (out / "llava_o1.json").write_text(json.dumps(_marker(), indent=2) + "\n")
    return out


def _marker() -> dict:
    return {"builder": "tiny", "version": BUILDER_VERSION, "seed": SEED}


def _is_current(path: Path) -> bool:
    try:
        return json.loads((path / "llava_o1.json").read_text()) == _marker()
    except (OSError, ValueError):
        return False


def default_model_dir() -> Path:
    """Where `serve` keeps the embedded model: $LLAVA_O1_CACHE or ~/.cache/llava-o1, then tiny/."""
    root = os.environ.get("LLAVA_O1_CACHE") or Path.home() / ".cache" / "llava-o1"
    return Path(root) / "tiny-idefics3"


def ensure_default_model() -> Path:
    """Build the embedded model into the cache folder once; later calls reuse it."""
    path = default_model_dir()
    if not (path / "config.json").exists() or not _is_current(path):
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        build_tiny_model(tmp)
        # Rename into place so a half-written folder is never taken for a model.
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    return path


def embedded_model() -> tuple[str, str]:
    """(path, served name) of the embedded random-weight tiny model, built into the cache once."""
    return str(ensure_default_model()), EMBEDDED_MODEL_NAME
