"""Starts the engine a command line asks for (today: vLLM; the model defaults to the embedded one)."""

from __future__ import annotations

import argparse

from models.engine import Engine

EMBEDDED_MODEL_NAME = "llava-o1-tiny"


def start_engine(args: argparse.Namespace) -> Engine:
    """An engine for `args.model`, or for the embedded tiny model (built once) when none is given."""
    from models.engine_config import engine_args_from
    from models.tiny_model import ensure_default_model
    from models.vllm_engine import VllmEngine

    if args.model is None and not args.served_model_name:
        args.served_model_name = [EMBEDDED_MODEL_NAME]
    model = args.model or str(ensure_default_model())
    return VllmEngine.from_engine_args(engine_args_from(args, model))
