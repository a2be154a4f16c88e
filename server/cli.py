"""The `llava-o1` command: one subcommand per verb, each with its own parser, in its own module.

Subcommands are looked up by name and imported only when run, so `llava-o1 tiny-model` does not
pay for importing vLLM. The benchmark and training commands live in `bench/` and `training/`;
this table is the one place the command line reaches into them.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    module: str
    function: str  # takes the command's argv, returns its exit code
    summary: str


COMMANDS: dict[str, Command] = {
    "serve": Command("server.serve", "serve", "start the inference server (engine flags as in `vllm serve`)"),
    "ask": Command("server.ask", "ask", "answer one question about an image, without a server"),
    "run-batch": Command("server.batch", "main", "answer an OpenAI batch file (JSONL), in process or against --url"),
    "bench": Command(
        "bench.benchmark", "main", "measure throughput and latency against the published procedure and the engine"
    ),
    "soak": Command(
        "bench.soak", "main", "run a long mixed load against a server and report 5xx, engine deaths, memory, leaks"
    ),
    "eval": Command("bench.evaluate", "main", "score a search strategy on records with known answers"),
    "tiny-model": Command(
        "training.commands", "tiny_model", "build the embedded tiny vision-language model into a folder"
    ),
    "synth-data": Command(
        "training.commands",
        "synth_data",
        "write synthetic shape questions with four-stage answers (LLaVA-o1-100k format)",
    ),
    "judge-data": Command(
        "training.commands",
        "judge_data",
        "write on-policy judge turns: a model's own candidates, labelled against the scenes' ground truth",
    ),
    "annotate": Command(
        "training.annotate",
        "main",
        "rewrite VQA records' answers into four stages with a teacher model behind an OpenAI-style API",
    ),
    "train": Command(
        "training.commands", "train_model", "fine-tune a model on such records (loss on the answers only)"
    ),
    "demo-model": Command(
        "training.commands", "demo_model", "rebuild the demo model from scratch (synthetic data, then training)"
    ),
    "demo-verifier": Command(
        "training.commands",
        "demo_verifier",
        "build the demo model's verifier, resumably (drills, counterfactual and on-policy turns, then training)",
    ),
}

USAGE = (
    "usage: llava-o1 COMMAND [options]\n\ncommands:\n"
    + "".join(f"  {name:<13} {command.summary}\n" for name, command in COMMANDS.items())
    + "\n`llava-o1 COMMAND --help` describes a command's options.\n"
)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"llava-o1: unknown command {argv[0]!r}\n\n{USAGE}", end="", file=sys.stderr)
        return 2
    command = COMMANDS[argv[0]]
    run = getattr(importlib.import_module(command.module), command.function)
    return int(run(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
