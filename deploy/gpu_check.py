"""GPU check of the transformers engine at the paper's scale, without downloading anything.

Builds a random-weight Mllama with the shapes of Llama-3.2-11B-Vision (the LLaVA-CoT checkpoint's
architecture) in bfloat16 directly on the GPU, runs stage search (beam width 4) for 16 concurrent
requests on the hf engine, then plain sampling of the same number of candidate tokens per request
on the same engine, and prints both with the device's name. On a machine without a GPU (or with
`--size tiny`) it runs the same steps on the tiny Mllama config, as a check of the script itself.

    PYTHONPATH=. python deploy/gpu_check.py [--size auto|real|tiny] [--out gpu-check.json]

Needs torch, transformers and pillow only (no vLLM), so it runs on the lent GPU machines as they come.
Random weights never write a closing tag, so every stage runs to --max-tokens-per-stage: the token
counts are exact and the two runs do the same sampling work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REAL_VISION = {  # Llama-3.2-11B-Vision
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_global_layers": 8,
    "attention_heads": 16,
    "image_size": 560,
    "patch_size": 14,
    "max_num_tiles": 4,
    "vision_output_dim": 7680,
}
REAL_TEXT = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 40,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38],
}


def build_engine(size: str):
    import torch
    from transformers import MllamaConfig, MllamaForConditionalGeneration

    from models.chat_template import ChatTemplateRenderer
    from models.hf_engine import HfEngine
    from training import tiny_mllama
    from training.tiny_model import build_tokenizer

    tokenizer = build_tokenizer(
        tiny_mllama.SPECIAL_TOKENS,
        tiny_mllama.CHAT_TEMPLATE,
        bos=tiny_mllama.BOS,
        eos=tiny_mllama.EOT,
        pad=tiny_mllama.PAD,
        image=tiny_mllama.IMAGE,
    )
    if size == "tiny":
        config = tiny_mllama.build_config(tokenizer)
        processor = tiny_mllama.build_processor(tokenizer)
        device, dtype = "cpu", torch.float32
    else:
        from transformers import MllamaProcessor
        from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (tiny_mllama.BOS, tiny_mllama.EOT, tiny_mllama.PAD)}
        text = {
            **REAL_TEXT,
            "bos_token_id": ids[tiny_mllama.BOS],
            "eos_token_id": ids[tiny_mllama.EOT],
            "pad_token_id": ids[tiny_mllama.PAD],
        }
        config = MllamaConfig(
            vision_config=REAL_VISION,
            text_config=text,
            image_token_index=tokenizer.convert_tokens_to_ids(tiny_mllama.IMAGE),
        )
        image_processor = MllamaImageProcessorPil(size={"height": 560, "width": 560}, max_image_tiles=4)
        processor = MllamaProcessor(
            image_processor=image_processor, tokenizer=tokenizer, chat_template=tiny_mllama.CHAT_TEMPLATE
        )
        device, dtype = "cuda", torch.bfloat16
    started = time.perf_counter()
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # weights are created in bf16 on the GPU: no float32 copy, no transfer
    try:
        with torch.device(device):
            model = MllamaForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(default)
    parameters = sum(p.numel() for p in model.parameters())
    engine = HfEngine(model, processor, ChatTemplateRenderer(processor), f"random-mllama-{size}", 4096)
    return engine, {
        "parameters": parameters,
        "build_s": round(time.perf_counter() - started, 1),
        "dtype": str(dtype).removeprefix("torch."),
    }


def questions(count: int):
    from PIL import Image, ImageDraw

    from models.engine import ChatMessage, ChatPart

    items = []
    for i in range(count):
        image = Image.new("RGB", (320, 240), "white")
        ImageDraw.Draw(image).ellipse((20 + 10 * i, 20, 120 + 10 * i, 120), fill=(40 * i % 255, 90, 200))
        items.append([ChatMessage("user", (ChatPart.of_image(image), ChatPart.of_text(f"How many circles? ({i})")))])
    return items


async def timed_pool(work, count: int) -> dict:
    async def one(i):
        started = time.perf_counter()
        tokens = await work(i)
        return time.perf_counter() - started, tokens

    started = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(count)))
    wall = time.perf_counter() - started
    latencies = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    return {
        "requests": count,
        "wall_s": round(wall, 2),
        "requests_per_second": round(count / wall, 3),
        "candidate_tokens_per_second": round(tokens / wall, 1),
        "candidate_tokens_per_request": tokens / count,
        "latency_p50_s": round(statistics.median(latencies), 2),
        "latency_max_s": round(latencies[-1], 2),
    }


async def run(args) -> dict:
    import torch
    import transformers

    from models.engine import SamplingSettings
    from stage_search.config import SearchConfig
    from stage_search.search import run_search

    size = args.size if args.size != "auto" else ("real" if torch.cuda.is_available() else "tiny")
    engine, built = build_engine(size)
    config = SearchConfig(beam_width=args.beam_width, max_tokens_per_stage=args.max_tokens_per_stage, seed=0)
    asked = questions(args.requests + 1)
    await run_search(engine, asked[-1], config)  # warm-up: one-off costs (kernels, allocator)

    async def search(i):
        return (await run_search(engine, asked[i], config)).usage.completion_tokens

    ours = await timed_pool(search, args.requests)
    per_candidate = round(ours["candidate_tokens_per_request"] / args.beam_width)

    async def plain(i):
        settings = SamplingSettings(
            n=args.beam_width,
            max_tokens=per_candidate,
            temperature=0.6,
            top_p=0.9,
            ignore_eos=True,
            use_prefix_cache=False,
        )
        generation = await engine.generate(engine.render(asked[i]), settings, job_id=f"plain-{i}")
        return sum(c.num_tokens for c in generation.candidates)

    raw = await timed_pool(plain, args.requests)
    await engine.shutdown()
    device = torch.cuda.get_device_name(0) if size == "real" else platform.processor() or platform.machine()
    return {
        "device": device,
        "size": size,
        **built,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "concurrency": args.requests,
        "beam_width": args.beam_width,
        "max_tokens_per_stage": args.max_tokens_per_stage,
        "stage_search": ours,
        "plain_generate": raw,
        "stage_search_vs_plain": round(ours["requests_per_second"] / raw["requests_per_second"], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("auto", "real", "tiny"), default="auto")
    parser.add_argument("--requests", type=int, default=16, help="concurrent requests")
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument("--max-tokens-per-stage", type=int, default=48)
    parser.add_argument("--out", help="also write the figures as JSON here")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
