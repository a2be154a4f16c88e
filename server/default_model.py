"""The model `serve`, `ask` and `eval` run when `--model` is not given."""

from __future__ import annotations

import argparse

from models.demo_weights import DEMO_DIR, DEMO_MODEL_NAME, DEMO_VERIFIER_DIR


def use_default_model(args: argparse.Namespace) -> None:
    """Without `--model`: the shipped demo model, or, in a checkout without its weights, the
    embedded random tiny model (built into the cache once). Sets the served name too. The demo
    model is judged by its demo verifier unless a verifier is named or --self-judge is given; a
    model given with --model judges itself unless a verifier is named."""
    if args.model is not None or getattr(args, "engine_url", None):
        return  # given, or served by the remote engine
    if (DEMO_DIR / "config.json").exists():
        path, name = str(DEMO_DIR), DEMO_MODEL_NAME
        named = getattr(args, "judge_engine_url", None) or getattr(args, "judge_model_path", None)
        if not (named or getattr(args, "self_judge", False)) and (DEMO_VERIFIER_DIR / "config.json").exists():
            args.judge_model_path = str(DEMO_VERIFIER_DIR)
    else:
        from training.tiny_model import embedded_model

        path, name = embedded_model()
    args.model = path
    args.served_model_name = args.served_model_name or [name]
