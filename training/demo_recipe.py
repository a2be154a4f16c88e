"""The demo model: the tiny Idefics3 architecture, a little larger, trained here on synthetic shape
questions (training/synthetic_data.py) until it answers in the four stages and counts.

`llava-o1 demo-model --out DIR` (or `make demo-model`) reproduces it from scratch: synthetic data
from a fixed seed, a random-weight base from a fixed seed, then `llava-o1 train`'s loop on a step
and time budget. Training on a CPU is not bit-for-bit reproducible across machines (thread counts
change float sums), so a rebuild is equivalent, not identical.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from training.tiny_model import TinyShape, build_tiny_model

DATA_SEED = 0
DEMO_CORPUS = (
    "How many red green blue yellow purple shapes circles squares triangles are in the image?",
    "Are there more red shapes or more blue shapes? Answer red, blue or same. Which color is the most frequent?",
    "I will find the shapes in the image, whatever their color, and count them. compare the two counts.",
    "The image shows 1 2 3 4 5 6 7 shapes on a white background: 1 red circle, 2 blue squares and 3 green triangles.",
    "Counting the shapes gives 3. There are 2 red and 1 blue shapes; 2 is more than 1, so there are more red shapes.",
    "The counts by color are 1 blue, 2 red; red has the most with 2. tie with both counts are the numbers are the same",
    "The answer is 3. A. B. C. D. Answer with the option's letter. pick the color with the highest count.",
)
DEMO_SHAPE = TinyShape(image_size=112, vision_hidden=96, vision_layers=3, text_layers=3, corpus=DEMO_CORPUS)


@dataclass(frozen=True)
class JudgeSet:
    """On-policy judge turns (`llava-o1 judge-data`) made from the model as it stands before the
    first phase that uses them, and kept for the later ones."""

    scenes: int
    scene_seed: int
    temperature: float
    beam_width: int = 8

    def argv(self, model: Path, out: Path) -> list[str]:
        # The recipe's models are folders whose names do not say they are stage-trained: the
        # prompts must be the served demo model's, without the stage instruction.
        return [
            "--model", str(model), "--out", str(out), "--n", str(self.scenes), "--scene-seed", str(self.scene_seed),
            "--beam-width", str(self.beam_width), "--temperature", str(self.temperature), "--stage-prompt", "never",
        ]  # fmt: skip


# What a phase trains on, by name (a name may repeat, to weigh it more in the pooled sample):
ANSWERS = "answers"  # the phase's synthetic answer records
JUDGE = "judge"  # every on-policy judge turn of the recipe's judge sets
JUDGE_CONCLUSION = "judge:CONCLUSION"  # only their CONCLUSION turns
COUNTERFACTUAL_CONCLUSION = "counterfactual:CONCLUSION"  # right vs wrong conclusions of the phase's scenes


@dataclass(frozen=True)
class Phase:
    """One training run of the recipe: its learning rate, time budget, answer scenes, and sources."""

    lr: float
    minutes: float
    data_seed: int = DATA_SEED
    records: int = 4000
    sources: tuple[str, ...] = (ANSWERS,)
    loss_average: str = "token"  # train's --loss-average

    @property
    def judges(self) -> bool:
        return any(source != ANSWERS for source in self.sources)


# The format and rough counts at a high learning rate, the counts at lower ones; then two phases on
# fresh pictures (new seeds, five times as many each): by phase 3 the 4000 pictures are learnt by
# heart, and unseen pictures are what generalises (accuracy after each phase: docs/benchmarks.md).
PHASES = (
    Phase(2e-3, 11.0),
    Phase(7e-4, 11.0),
    Phase(3e-4, 10.0),
    Phase(3e-4, 12.0, data_seed=100, records=20000),
    Phase(1.5e-4, 12.0, data_seed=200, records=20000),
)

# Self-judging, tried on 2026-11-28 and measured not to help this model (docs/benchmarks.md,
# "Teaching the demo model to judge"), so the committed model is PHASES' and these are not in the
# default recipe: `build_demo_model(out, phases=PHASES + JUDGE_PHASES)` runs them. Judge sets are
# made from the phase-5 model, which answers but was never taught to judge. Mixed with answers from
# the start the judge did not learn at all; on judge turns alone (phase 6) it learns random wrong
# conclusions and loses answering, which phase 7 brings back beside the judge turns.
JUDGE_SETS = (JudgeSet(2000, 310, 1.0), JudgeSet(1500, 311, 0.6))
_JUDGE_SOURCES = (JUDGE_CONCLUSION, COUNTERFACTUAL_CONCLUSION)
JUDGE_PHASES = (
    Phase(1e-3, 12.0, data_seed=400, records=20000, sources=_JUDGE_SOURCES, loss_average="example"),
    Phase(
        3e-4,
        20.0,
        data_seed=400,
        records=20000,
        sources=(ANSWERS, ANSWERS, *_JUDGE_SOURCES, JUDGE),
        loss_average="example",
    ),
)


def build_demo_model(
    out: str | Path,
    *,
    steps_per_phase: int = 100_000,
    phases: tuple[Phase, ...] = PHASES,
    judge_sets: tuple[JudgeSet, ...] = JUDGE_SETS,
    batch_size: int = 32,
) -> dict:
    """Synthetic data, a fresh base, training in phases; the model (no checkpoints) ends up in `out`."""
    from training.synthetic_data import write_dataset
    from training.train import train

    out = Path(out)
    runs = []
    with tempfile.TemporaryDirectory(prefix="llava-o1-demo-") as tmp:
        work = Path(tmp)
        model = work / "base"
        build_tiny_model(model, DEMO_SHAPE)
        judge_dirs: list[Path] = []
        for index, phase in enumerate(phases):
            data = work / f"data-{phase.data_seed}-{phase.records}"
            if not data.exists():
                write_dataset(data, phase.records, phase.data_seed, test_fraction=0.0)
            if phase.judges and not judge_dirs:
                judge_dirs = _make_judge_sets(model, work, judge_sets)
            trained = work / f"phase-{index + 1}"
            files = [_source_file(source, data, judge_dirs) for source in phase.sources]
            runs.append(
                train(
                    str(model),
                    [f for group in files for f in group],
                    str(trained),
                    steps=steps_per_phase,
                    max_minutes=phase.minutes,
                    batch_size=batch_size,
                    lr=phase.lr,
                    save_every=0,
                    loss_average=phase.loss_average,
                )
            )
            model = trained
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(model, out)
    summary = {
        "phases": [
            {
                "lr": p.lr,
                "minutes": p.minutes,
                "steps": r["steps"],
                "data": f"llava-o1 synth-data --n {p.records} --seed {p.data_seed} --test-fraction 0",
                "sources": list(p.sources),
                "loss_average": p.loss_average,
                "first_loss": r["first_loss"],
                "last_loss": r["last_loss"],
            }
            for p, r in zip(phases, runs, strict=True)
        ],
        "judge_sets": [f"llava-o1 judge-data {' '.join(j.argv(Path('MODEL'), Path('OUT')))}" for j in judge_sets]
        if any(p.judges for p in phases)
        else [],
        "batch_size": batch_size,
        "from": "random weights (training.demo_recipe.DEMO_SHAPE)",
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _make_judge_sets(model: Path, work: Path, judge_sets: tuple[JudgeSet, ...]) -> list[Path]:
    from training.commands import judge_data

    dirs = []
    for judge_set in judge_sets:
        folder = work / f"judge-{judge_set.scene_seed}"
        judge_data(judge_set.argv(model, folder))
        dirs.append(folder)
    return dirs


def _source_file(source: str, data: Path, judge_dirs: list[Path]) -> list[str]:
    """The record files a source name stands for (written on first use)."""
    from training.judge_data import keep_stages, write_counterfactual

    if source == ANSWERS:
        return [str(data / "train.jsonl")]
    if source == JUDGE:
        return [str(folder / "judge.jsonl") for folder in judge_dirs]
    if source == JUDGE_CONCLUSION:
        return [str(keep_stages(folder / "judge.jsonl", ("CONCLUSION",))) for folder in judge_dirs]
    if source == COUNTERFACTUAL_CONCLUSION:
        counterfactual = data / "judge_counterfactual.jsonl"
        if not counterfactual.exists():
            write_counterfactual(data, seed=1)
        return [str(keep_stages(counterfactual, ("CONCLUSION",)))]
    raise ValueError(f"unknown data source {source!r}")
