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
class Phase:
    """One training run of the recipe: its learning rate, time budget, and the data it trains on."""

    lr: float
    minutes: float
    data_seed: int = DATA_SEED
    records: int = 4000


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


def build_demo_model(
    out: str | Path, *, steps_per_phase: int = 100_000, phases: tuple[Phase, ...] = PHASES, batch_size: int = 32
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
        for index, phase in enumerate(phases):
            data = work / f"data-{phase.data_seed}-{phase.records}"
            if not data.exists():
                write_dataset(data, phase.records, phase.data_seed, test_fraction=0.0)
            trained = work / f"phase-{index + 1}"
            runs.append(
                train(
                    str(model),
                    str(data / "train.jsonl"),
                    str(trained),
                    steps=steps_per_phase,
                    max_minutes=phase.minutes,
                    batch_size=batch_size,
                    lr=phase.lr,
                    save_every=0,
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
                "first_loss": r["first_loss"],
                "last_loss": r["last_loss"],
            }
            for p, r in zip(phases, runs, strict=True)
        ],
        "batch_size": batch_size,
        "from": "random weights (training.demo_recipe.DEMO_SHAPE)",
    }
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
