"""`llava-o1 synth-data`: deterministic per seed, in the LLaVA-o1-100k record format, answers true to the image."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from helpers import count
from PIL import Image

from training.synthetic_data import COLORS, KINDS, SHAPES

STAGED = re.compile(
    r"<SUMMARY>(.+)</SUMMARY>\n\n<CAPTION>(.+)</CAPTION>\n\n<REASONING>(.+)</REASONING>\n\n"
    r"<CONCLUSION>(.+)</CONCLUSION>",
    re.S,
)


def synth(cli_env, out: Path, n: int, seed: int) -> list[dict]:
    done = subprocess.run(
        ["llava-o1", "synth-data", "--out", str(out), "--n", str(n), "--seed", str(seed)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [
        json.loads(line) for split in ("train", "test") for line in (out / f"{split}.jsonl").read_text().splitlines()
    ]


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def dataset(cli_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "a"
    return out, synth(cli_env, out, 60, seed=7)


def test_same_seed_same_files_other_seed_other_files(cli_env, dataset, tmp_path):
    out, _ = dataset
    synth(cli_env, tmp_path / "again", 60, seed=7)
    synth(cli_env, tmp_path / "other", 60, seed=8)
    assert digest(tmp_path / "again") == digest(out)
    assert digest(tmp_path / "other") != digest(out)


def test_records_follow_the_llava_conversation_format(dataset):
    out, records = dataset
    assert len(records) == 60
    assert len((out / "test.jsonl").read_text().splitlines()) == 6
    assert len({r["id"] for r in records}) == 60
    for record in records:
        human, gpt = record["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<image>\n")
        assert gpt["from"] == "gpt" and STAGED.fullmatch(gpt["value"])
        assert Image.open(out / record["image"]).size == (112, 112)
    assert set(Counter(r["kind"] for r in records)) == set(KINDS)
    assert any("options" in r for r in records) and any("options" not in r for r in records)


def test_color_counts_and_answers_agree_with_the_pixels(dataset):
    out, records = dataset
    checked = 0
    for record in records:
        if record["kind"] != "count_color":
            continue
        question = record["conversations"][0]["value"]
        color = next(c for c in COLORS if f"many {c} shapes" in question)
        truth = count(Image.open(out / record["image"]).convert("RGB"), COLORS[color])
        answer = record["answer"]
        if "options" in record:
            answer = record["options"]["ABCD".index(answer)]
            assert re.search(rf"<CONCLUSION>{record['answer']}</CONCLUSION>", record["conversations"][1]["value"])
        assert int(answer) == truth
        checked += 1
    assert checked >= 10


def test_captions_name_only_known_colors_and_shapes(dataset):
    _, records = dataset
    for record in records:
        caption = STAGED.fullmatch(record["conversations"][1]["value"]).group(2)
        for color, shape in re.findall(r"\d+ (\w+) (\w+?)s?\b(?:,| and|\.)", caption):
            assert color in COLORS and shape in SHAPES
