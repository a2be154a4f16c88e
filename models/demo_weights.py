"""The demo model shipped inside the package (weights, tokenizer, processor): the default of `serve`
and `ask`. How it was made: training/demo_recipe.py."""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).parent / "demo"
DEMO_MODEL_NAME = "llava-o1-demo"
