"""Starts the engine a command line asks for (`--engine`): vLLM or transformers in process on `--model`,
or a remote vLLM OpenAI-compatible server (`--engine-url`); optionally a separate verifier (judge)
model, in this process (`--judge-model-path`) or on its own server (`--judge-engine-url`)."""

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
        parser.add_argument(
            "--judge-model-path",
            help="a verifier (judge) model to run in this process beside the main one, by folder or hub id "
            "(the demo model's default: its demo verifier, models/demo_verifier)",
        ),
        parser.add_argument(
            "--judge-engine",
            choices=ENGINES[:3],
            default="auto",
            help="the engine of --judge-model-path: vllm, hf, or auto (as --engine)",
        ),
        parser.add_argument(
            "--judge-gpu-memory-utilization",
            type=float,
            default=0.1,
            help="on a GPU, the share of its memory the in-process verifier's vLLM engine takes (leave it free "
            "with --gpu-memory-utilization)",
        ),
        parser.add_argument(
            "--self-judge",
            action="store_true",
            help="the model judges its own candidates, even where a verifier is the default (the demo model)",
        ),
    ]


def start_engine(args: argparse.Namespace) -> Engine:
    """The engine the flags ask for, with a separate verifier (judge) when one is named: on its own
    server (--judge-engine-url) or in this process (--judge-model-path)."""
    judge_url = getattr(args, "judge_engine_url", None)
    judge_path = getattr(args, "judge_model_path", None)
    if judge_url and judge_path:
        raise SystemExit("give one verifier: --judge-engine-url or --judge-model-path, not both")
    engine = _start_main_engine(args)
    if not (judge_url or judge_path):
        return engine
    from models.separate_judge import SeparateJudge

    if judge_url:
        judge = _connect(args, judge_url, getattr(args, "judge_model", None))
        log.warning("llava-o1: the verifier is %s at %s", judge.model_name, judge_url)
    else:
        judge = _start_local_judge(args, str(judge_path))
    return SeparateJudge(engine, judge)


def _start_local_judge(args: argparse.Namespace, path: str) -> Engine:
    """The verifier model in this process, on the engine --judge-engine picks (as --engine does)."""
    name = judge_model_name(path)
    kind, reason = pick_engine(getattr(args, "judge_engine", "auto"), path)
    log.warning("llava-o1: the verifier is %s, on the %s engine (%s)", name, kind, reason)
    if kind == "hf":
        from models.hf_engine import HfEngine

        return HfEngine.from_pretrained(path, model_name=name, dtype=args.dtype)
    from models.engine_config import engine_args_from
    from models.vllm_engine import VllmEngine

    judge_args = argparse.Namespace(**vars(args))
    # Its own context and name; on a GPU, its own small share of the memory.
    judge_args.max_model_len, judge_args.served_model_name = None, [name]
    judge_args.gpu_memory_utilization = getattr(args, "judge_gpu_memory_utilization", 0.1)
    return VllmEngine.from_engine_args(engine_args_from(judge_args, path))


def judge_model_name(path: str) -> str:
    """The name a verifier model reports as: the demo verifier's, else its folder's or hub id's last part."""
    from models.demo_weights import DEMO_VERIFIER_DIR, DEMO_VERIFIER_NAME

    if Path(path).resolve() == DEMO_VERIFIER_DIR.resolve():
        return DEMO_VERIFIER_NAME
    return Path(path).name or path


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
