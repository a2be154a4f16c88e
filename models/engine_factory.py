"""Starts the engine a command line asks for: vLLM or transformers (`--engine`), on `--model`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from models.engine import Engine

ENGINES = ("auto", "vllm", "hf")

log = logging.getLogger(__name__)


def add_engine_choice(parser: argparse.ArgumentParser) -> argparse.Action:
    return parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="vllm, hf (transformers), or auto: vLLM when it is installed and runs the model's architecture, else hf",
    )


def start_engine(args: argparse.Namespace) -> Engine:
    """An engine for `args.model` (a folder or a hub id; the commands fill in their default first)."""
    model = args.model
    if model is None:
        raise ValueError("start_engine needs args.model")
    kind, reason = pick_engine(getattr(args, "engine", "auto"), model)
    log.warning("llava-o1: %s engine for %s (%s)", kind, model, reason)
    served = args.served_model_name[0] if args.served_model_name else None
    if kind == "hf":
        from models.hf_engine import HfEngine

        return HfEngine.from_pretrained(
            model, model_name=served or model, dtype=args.dtype, max_model_len=args.max_model_len
        )
    from models.engine_config import engine_args_from
    from models.vllm_engine import VllmEngine

    return VllmEngine.from_engine_args(engine_args_from(args, model))


def pick_engine(wanted: str, model: str) -> tuple[str, str]:
    """("vllm" | "hf", why) for `--engine wanted` and the model's architecture."""
    if wanted != "auto":
        return wanted, "asked for with --engine"
    architecture = model_architecture(model)
    try:
        from vllm.model_executor.models import ModelRegistry
    except Exception as exc:  # not installed, or installed but not importable here
        return "hf", f"vLLM is not usable here: {type(exc).__name__}"
    if architecture is None:
        return "vllm", "the model's architecture is unknown here; vLLM will check it"
    if architecture in ModelRegistry.get_supported_archs():
        return "vllm", f"vLLM runs {architecture}"
    return "hf", f"this vLLM does not run {architecture}"


def model_architecture(model: str) -> str | None:
    """The first `architectures` entry of a local model folder's config.json (None for hub ids)."""
    try:
        config = json.loads((Path(model) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    architectures = config.get("architectures") or [None]
    return architectures[0]
