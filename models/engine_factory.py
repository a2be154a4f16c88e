"""Starts the engine a command line asks for (`--engine`): vLLM or transformers in process on `--model`,
or a remote vLLM OpenAI-compatible server (`--engine-url`); optionally a judge on another server."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from models.engine import Engine
from models.remote_engine import DEFAULT_SESSION_HEADER

ENGINES = ("auto", "vllm", "hf", "remote")

log = logging.getLogger(__name__)


def add_engine_choice(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """--engine and the remote engine's flags."""
    return [
        parser.add_argument(
            "--engine",
            choices=ENGINES,
            default="auto",
            help="vllm, hf (transformers), remote (a vLLM OpenAI-compatible server at --engine-url), or auto: "
            "vLLM when it is installed and runs the model's architecture, else hf",
        ),
        parser.add_argument(
            "--engine-url",
            help="--engine remote: the engine's base URL (vllm serve, or a router in front of several)",
        ),
        parser.add_argument(
            "--engine-api-key",
            default=os.environ.get("LLAVA_O1_ENGINE_API_KEY"),
            help="bearer token for --engine-url and --judge-engine-url (default: $LLAVA_O1_ENGINE_API_KEY)",
        ),
        parser.add_argument(
            "--session-header",
            default=DEFAULT_SESSION_HEADER,
            help="the header carrying each search's routing key on every engine request, for a "
            f"consistent-hash router (default {DEFAULT_SESSION_HEADER})",
        ),
        parser.add_argument(
            "--engine-priority",
            action="store_true",
            help="send the search's request priorities (the engine must run --scheduling-policy priority)",
        ),
        parser.add_argument(
            "--engine-wait",
            type=float,
            default=300.0,
            help="seconds to wait at start for the remote engine to answer (default 300)",
        ),
        parser.add_argument(
            "--judge-engine-url",
            help="send the judge's calls to this vLLM OpenAI-compatible server (a judge or reward model)",
        ),
        parser.add_argument("--judge-model", help="the model to ask at --judge-engine-url (default: its first)"),
    ]


def start_engine(args: argparse.Namespace) -> Engine:
    """The engine the flags ask for, with its judge on another server when --judge-engine-url is set."""
    engine = _start_main_engine(args)
    judge_url = getattr(args, "judge_engine_url", None)
    if not judge_url:
        return engine
    from models.separate_judge import SeparateJudge

    judge = _connect(args, judge_url, getattr(args, "judge_model", None))
    log.warning("llava-o1: the judge is %s at %s", judge.model_name, judge_url)
    return SeparateJudge(engine, judge)


def _connect(args: argparse.Namespace, url: str, model: str | None) -> Engine:
    from models.remote_engine import RemoteEngine

    return RemoteEngine.connect(
        url,
        model,
        api_key=getattr(args, "engine_api_key", None),
        wait_s=getattr(args, "engine_wait", 300.0),
        session_header=getattr(args, "session_header", DEFAULT_SESSION_HEADER),
        send_priority=getattr(args, "engine_priority", False),
    )


def _start_main_engine(args: argparse.Namespace) -> Engine:
    """An engine for `args.model` (a folder or a hub id; the commands fill in their default first),
    or the remote one at --engine-url."""
    served = args.served_model_name[0] if args.served_model_name else None
    if getattr(args, "engine", "auto") == "remote" or getattr(args, "engine_url", None):
        if not getattr(args, "engine_url", None):
            raise SystemExit("--engine remote needs --engine-url")
        log.warning("llava-o1: remote engine at %s", args.engine_url)
        return _connect(args, args.engine_url, served)
    model = args.model
    if model is None:
        raise ValueError("start_engine needs args.model")
    kind, reason = pick_engine(getattr(args, "engine", "auto"), model)
    log.warning("llava-o1: %s engine for %s (%s)", kind, model, reason)
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
