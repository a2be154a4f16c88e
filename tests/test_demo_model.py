"""The committed demo model, the README's way: `ask` uses it by default and counts a shapes picture
from `synth-data` right, in four stages it closes itself."""

from __future__ import annotations

import json
import subprocess

from PIL import Image

from models.synthetic_data import COLORS
from test_synthetic_data import count


def run(cli_env, *args):
    done = subprocess.run(["llava-o1", *args], env=cli_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_ask_uses_the_demo_model_and_counts_right(cli_env, tmp_path):
    run(cli_env, "synth-data", "--out", str(tmp_path / "shapes"), "--n", "10", "--seed", "1")
    image = tmp_path / "shapes" / "images" / "000000.png"
    truth = count(Image.open(image).convert("RGB"), COLORS["red"])
    result = json.loads(run(cli_env, "ask", "--image", str(image), "--question", "How many red shapes are in the image?",
                            "--strategy", "none", "--temperature", "0", "--json").stdout)
    assert [s["name"] for s in result["stages"]] == ["SUMMARY", "CAPTION", "REASONING", "CONCLUSION"]
    assert all(s["candidates"][0]["finish_reason"] == "stop" for s in result["stages"])  # it closed every stage
    assert result["answer"] == f"The answer is {truth}."
