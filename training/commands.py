"""The training commands of `llava-o1` (tiny-model, synth-data, train, demo-model): their options,
and the call into this package. Heavy imports wait until the options are parsed."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence


def tiny_model(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="llava-o1 tiny-model",
        description="Build a tiny random-weight vision-language model (deterministic) into OUT_DIR.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the model to")
    parser.add_argument(
        "--arch",
        choices=("idefics3", "mllama"),
        default="idefics3",
        help="idefics3 (the embedded model; runs on vLLM) or mllama (Llama-3.2-Vision's "
        "architecture; runs on the hf engine)",
    )
    args = parser.parse_args(argv)
    if args.arch == "mllama":
        from training.tiny_mllama import build_tiny_mllama as build
    else:
        from training.tiny_model import build_tiny_model as build
    path = build(args.out_dir)
    print(f"tiny {args.arch} model written to {path}")
    return 0


def synth_data(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="llava-o1 synth-data",
        description="Render shape scenes and write questions with four-stage answers: OUT/images/*.png, "
        "OUT/train.jsonl and OUT/test.jsonl (LLaVA-o1-100k record format). Deterministic per seed.",
    )
    parser.add_argument("--out", required=True, help="folder to write to")
    parser.add_argument("--n", type=int, default=1000, help="number of records (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.1, help="share of records in test.jsonl")
    args = parser.parse_args(argv)
    if args.n < 1 or not 0.0 <= args.test_fraction < 1.0:
        parser.error("--n must be at least 1 and --test-fraction in [0, 1)")
    from training.synthetic_data import write_dataset

    sizes = write_dataset(args.out, args.n, args.seed, args.test_fraction)
    print(f"{sizes['train']} train and {sizes['test']} test records written to {args.out}")
    return 0


def judge_data(argv: Sequence[str]) -> int:
    from pathlib import Path

    from models.engine_config import add_engine_arguments, make_parser, parse_engine_command
    from stage_search.config import STAGE_PROMPTS, SearchConfig

    defaults = SearchConfig()

    def build_parser() -> argparse.ArgumentParser:
        parser = make_parser(
            "llava-o1 judge-data",
            "Sample a model's own candidates per stage on fresh synthetic scenes, through the search, label them "
            "against the scenes' ground truth, and write judge turns (OUT/judge.jsonl, OUT/judge_generative.jsonl) "
            "beside the scenes' answers (OUT/train.jsonl).",
            verbose_flag=True,
        )
        group = parser.add_argument_group("judge data")
        group.add_argument("--out", required=True, help="folder to write to")
        group.add_argument("--n", type=int, default=1000, help="number of fresh scenes (default 1000)")
        group.add_argument(
            "--scene-seed", type=int, default=300, help="seed of the scenes: one no training or eval set uses"
        )
        group.add_argument("--beam-width", type=int, default=8, help="candidates per stage (default 8)")
        group.add_argument("--temperature", type=float, default=defaults.search_temperature)
        group.add_argument("--top-p", type=float, default=defaults.top_p)
        group.add_argument("--max-tokens-per-stage", type=int, default=96)
        group.add_argument("--stage-prompt", choices=STAGE_PROMPTS, default="auto")
        group.add_argument("--search-seed", type=int, help="seed for reproducible candidates")
        group.add_argument("--max-pairs", type=int, default=2, help="right-wrong pairs kept per scene and stage")
        group.add_argument("--no-whole-answers", action="store_true", help="skip best-of-N whole-answer pairs")
        group.add_argument(
            "--counterfactual",
            action="store_true",
            help="also write judge_counterfactual.jsonl: each scene's right conclusion against a wrong one, "
            "after its own right stages (no sampling)",
        )
        group.add_argument("--concurrency", type=int, default=16, help="scenes in flight at once")
        add_engine_arguments(parser)
        return parser

    args = parse_engine_command(build_parser, argv)
    if args.n < 1 or args.beam_width < 2:
        raise SystemExit("llava-o1 judge-data: --n must be at least 1 and --beam-width at least 2")
    from training.on_policy_data import build_judge_data

    summary = build_judge_data(args, Path(args.out))
    print(json.dumps(summary, indent=2))
    return 0


def train_model(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="llava-o1 train",
        description="Supervised fine-tuning on LLaVA-o1-100k-format records, loss on the assistant's tokens only. "
        "Writes the model to OUT, checkpoints to OUT/checkpoint-STEP.",
    )
    parser.add_argument("--model", help="model folder to start from (default: the embedded tiny model)")
    parser.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="one or more .jsonl files of records, trained on together (e.g. synth-data's train.jsonl and "
        "judge-data's judge.jsonl: one model that answers and judges)",
    )
    parser.add_argument("--out", required=True, help="folder for the trained model and its checkpoints")
    parser.add_argument("--steps", type=int, help="stop after this many steps (counted from the start, across resumes)")
    parser.add_argument("--max-minutes", type=float, help="stop after this many minutes of this run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps (0: never)")
    parser.add_argument("--resume", action="store_true", help="go on from OUT's latest checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--loss-average",
        choices=("token", "example"),
        default="token",
        help="token: over all target tokens of a batch (the model's own loss); example: per record, then over "
        "records, so a three-token judge verdict weighs as much as an eighty-token answer",
    )
    parser.add_argument(
        "--warmup-steps", type=int, default=0, help="raise the learning rate linearly over the first N steps"
    )
    args = parser.parse_args(argv)
    if args.steps is None and args.max_minutes is None:
        parser.error("give --steps, --max-minutes, or both")
    from training.tiny_model import ensure_default_model
    from training.train import train

    summary = train(
        args.model or str(ensure_default_model()),
        args.data,
        args.out,
        steps=args.steps,
        max_minutes=args.max_minutes,
        batch_size=args.batch_size,
        lr=args.lr,
        save_every=args.save_every,
        resume=args.resume,
        seed=args.seed,
        loss_average=args.loss_average,
        warmup_steps=args.warmup_steps,
    )
    print(
        f"trained to step {summary['steps']}: loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f}; "
        f"model written to {args.out}"
    )
    return 0


def demo_model(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="llava-o1 demo-model",
        description="Rebuild the demo model: synthetic shape questions from a fixed seed, a random tiny base, "
        "then training in five phases (about 60 minutes on 2 CPU cores).",
    )
    from models.demo_weights import DEMO_DIR
    from training.demo_recipe import build_demo_model

    parser.add_argument("--out", default=str(DEMO_DIR), help=f"where to write it (default: {DEMO_DIR})")
    parser.add_argument(
        "--steps-per-phase",
        type=int,
        default=100_000,
        help="step cap per phase; each phase otherwise ends on its time budget",
    )
    args = parser.parse_args(argv)
    summary = build_demo_model(args.out, steps_per_phase=args.steps_per_phase)
    last = summary["phases"][-1]
    print(
        f"demo model written to {args.out}: loss {last['first_loss']:.3f} -> {last['last_loss']:.3f} in its last phase"
    )
    return 0


def demo_verifier(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="llava-o1 demo-verifier",
        description="Build the demo model's verifier: drills, counterfactual and on-policy verifier turns, then "
        "training in phases (training/verifier_recipe.py). Resumable: run it again to go on from the last "
        "checkpoint in --work.",
    )
    from models.demo_weights import DEMO_VERIFIER_DIR, DEMO_VERIFIER_PROGRESS_DIR
    from training.verifier_recipe import build_demo_verifier, default_work_dir, save_progress

    parser.add_argument(
        "--out", default=str(DEMO_VERIFIER_DIR), help=f"where to write it (default: {DEMO_VERIFIER_DIR})"
    )
    parser.add_argument("--work", default=str(default_work_dir()), help="data, phases and checkpoints (kept)")
    parser.add_argument("--max-minutes", type=float, help="stop after this many minutes of training (resumable)")
    parser.add_argument(
        "--partial", action="store_true", help="copy the model to --out as it stands, even before the last phase ends"
    )
    parser.add_argument(
        "--progress",
        default=str(DEMO_VERIFIER_PROGRESS_DIR),
        help="a saved snapshot to go on from when --work has no phase yet (default: the committed one, "
        f"{DEMO_VERIFIER_PROGRESS_DIR})",
    )
    parser.add_argument(
        "--save-progress", action="store_true", help="write the snapshot to --progress when the run stops, to commit"
    )
    args = parser.parse_args(argv)
    summary = build_demo_verifier(
        args.out, args.work, max_minutes=args.max_minutes, partial=args.partial, progress=args.progress
    )
    reached = ", ".join(f"{p['name']} {p['reached']}/{p['steps']}" for p in summary["phases"])
    where = f"written to {args.out}" if summary["complete"] or args.partial else f"in progress in {args.work}"
    print(f"demo verifier {where} (steps: {reached})")
    if args.save_progress:
        save_progress(args.work, args.progress)
        print(f"progress saved to {args.progress}")
    return 0
