"""The demo model and its verifier, shipped inside the package (weights, tokenizer, processor): the
defaults of `serve` and `ask`. How they were made: training/demo_recipe.py, training/verifier_recipe.py."""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).parent / "demo"
DEMO_MODEL_NAME = "llava-o1-demo"
DEMO_VERIFIER_DIR = Path(__file__).parent / "demo_verifier"
DEMO_VERIFIER_NAME = "llava-o1-demo-verifier"
# Where the verifier's training stands between sittings (`llava-o1 demo-verifier --save-progress`).
DEMO_VERIFIER_PROGRESS_DIR = Path(__file__).parent / "demo_verifier_progress"
