"""Synthetic staged training data: scenes of simple shapes, questions about them, and four-stage
answers, in the LLaVA-o1-100k record format (LLaVA conversation style).

Each record: {"id", "image" (path relative to the data folder), "kind", "answer",
"conversations": [{"from": "human", "value": "<image>\\nQUESTION"}, {"from": "gpt", "value":
"<SUMMARY>...</SUMMARY>\\n\\n<CAPTION>...</CAPTION>\\n\\n<REASONING>...</REASONING>\\n\\n<CONCLUSION>...</CONCLUSION>"}]}.
`kind` and `answer` are extra fields for evaluation; the format's own fields are the other three.
Everything is drawn from one seeded random generator: the same seed gives the same files.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from stage_search.stages import StageSet

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
    "purple": (140, 50, 170),
}
SHAPES = ("circle", "square", "triangle")
KINDS = ("count_color", "count_shape", "compare", "most_color")
IMAGE_SIZE = 112
CELL = 28  # shapes sit in a 4x4 grid of cells, so they never overlap
LETTERS = "ABCD"


@dataclass(frozen=True)
class Shape:
    color: str
    shape: str
    x: int
    y: int
    radius: int


def random_scene(rng: random.Random) -> list[Shape]:
    cells = rng.sample(range((IMAGE_SIZE // CELL) ** 2), rng.randint(2, 7))
    shapes = []
    for cell in cells:
        radius = rng.randint(6, CELL // 2 - 2)
        cx = (cell % (IMAGE_SIZE // CELL)) * CELL + CELL // 2 + rng.randint(-(CELL // 2 - radius), CELL // 2 - radius)
        cy = (cell // (IMAGE_SIZE // CELL)) * CELL + CELL // 2 + rng.randint(-(CELL // 2 - radius), CELL // 2 - radius)
        shapes.append(Shape(rng.choice(list(COLORS)), rng.choice(SHAPES), cx, cy, radius))
    return shapes


def render(scene: list[Shape]):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), "white")
    draw = ImageDraw.Draw(image)
    for s in scene:
        box = (s.x - s.radius, s.y - s.radius, s.x + s.radius, s.y + s.radius)
        if s.shape == "circle":
            draw.ellipse(box, fill=COLORS[s.color])
        elif s.shape == "square":
            draw.rectangle(box, fill=COLORS[s.color])
        else:
            draw.polygon(
                [(s.x, s.y - s.radius), (s.x - s.radius, s.y + s.radius), (s.x + s.radius, s.y + s.radius)],
                fill=COLORS[s.color],
            )
    return image


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def describe(scene: list[Shape]) -> str:
    groups = Counter((s.color, s.shape) for s in scene)
    parts = [plural(n, f"{color} {shape}") for (color, shape), n in sorted(groups.items())]
    listing = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"The image shows {plural(len(scene), 'shape')} on a white background: {listing}."


def make_question(scene: list[Shape], kind: str, rng: random.Random) -> tuple[str, str, str, str, str]:
    """(question, summary, reasoning, answer, kind) for one question about the scene."""
    colors = Counter(s.color for s in scene)
    shapes = Counter(s.shape for s in scene)
    if kind == "count_color":
        # Mostly colors that are there: "0" would otherwise be the most common answer.
        color = rng.choice(sorted(colors) if rng.random() < 0.8 else list(COLORS))
        n = colors[color]
        return (
            f"How many {color} shapes are in the image?",
            f"I will find the {color} shapes in the image and count them.",
            f"Counting the {color} shapes gives {n}.",
            str(n),
            kind,
        )
    if kind == "count_shape":
        shape = rng.choice(sorted(shapes) if rng.random() < 0.8 else SHAPES)
        n = shapes[shape]
        return (
            f"How many {shape}s are in the image?",
            f"I will find the {shape}s in the image, whatever their color, and count them.",
            f"Counting the {shape}s gives {n}.",
            str(n),
            kind,
        )
    if kind == "compare":
        a, b = rng.sample(list(COLORS), 2)
        na, nb = colors[a], colors[b]
        answer = a if na > nb else b if nb > na else "same"
        verdict = (
            f"{na} is more than {nb}, so there are more {a} shapes"
            if na > nb
            else f"{nb} is more than {na}, so there are more {b} shapes"
            if nb > na
            else f"both counts are {na}, so the numbers are the same"
        )
        return (
            f"Are there more {a} shapes or more {b} shapes? Answer {a}, {b} or same.",
            f"I will count the {a} shapes and the {b} shapes and compare the two counts.",
            f"There are {na} {a} and {nb} {b} shapes; {verdict}.",
            answer,
            kind,
        )
    top = max(colors.values())
    leaders = sorted(c for c, n in colors.items() if n == top)
    counts = ", ".join(f"{n} {c}" for c, n in sorted(colors.items()))
    if len(leaders) == 1:
        reasoning = f"The counts by color are {counts}; {leaders[0]} has the most with {top}."
    else:
        reasoning = (
            f"The counts by color are {counts}; {' and '.join(leaders)} tie with {top}, "
            f"so {leaders[0]} is one of the most frequent."
        )
    return (
        "Which color is the most frequent in the image?",
        "I will count the shapes of each color and pick the color with the highest count.",
        reasoning,
        leaders[0],
        kind,
    )


def as_multiple_choice(question: str, answer: str, kind: str, rng: random.Random) -> tuple[str, str, list[str]]:
    """The question with four lettered options; returns (question, correct letter, options)."""
    if kind in ("count_color", "count_shape"):
        pool = [str(n) for n in range(0, 8) if str(n) != answer]
    else:
        pool = [c for c in (*COLORS, "same") if c != answer]
    options = [*rng.sample(pool, 3), answer]
    rng.shuffle(options)
    letter = LETTERS[options.index(answer)]
    listed = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    base = question.split(" Answer ")[0]
    return f"{base}\n{listed}\nAnswer with the option's letter.", letter, options


def make_record(index: int, image_name: str, scene: list[Shape], rng: random.Random, stages: StageSet) -> dict:
    kind = KINDS[index % len(KINDS)]
    question, summary, reasoning, answer, kind = make_question(scene, kind, rng)
    options = None
    if rng.random() < 0.4:
        question, answer, options = as_multiple_choice(question, answer, kind, rng)
    conclusion = answer if options else f"The answer is {answer}."
    value = stages.render(
        dict(zip((s.name for s in stages.stages), (summary, describe(scene), reasoning, conclusion), strict=True))
    )
    record = {
        "id": f"shapes-{index:06d}",
        "image": image_name,
        "kind": kind,
        "answer": answer,
        "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": value}],
    }
    if options:
        record["options"] = options
    return record


def write_dataset(out: str | Path, n: int, seed: int, test_fraction: float = 0.1) -> dict[str, int]:
    """Write `n` records (images/*.png, train.jsonl, test.jsonl) to `out`; returns the split sizes."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    stages = StageSet.from_names()
    test_count = round(n * test_fraction) if n > 1 else 0
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    for index in range(n):
        scene = random_scene(rng)
        name = f"images/{index:06d}.png"
        render(scene).save(out / name, format="PNG")
        split = "test" if index >= n - test_count else "train"
        splits[split].append(make_record(index, name, scene, rng, stages))
    for split, records in splits.items():
        with open(out / f"{split}.jsonl", "w") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
    return {split: len(records) for split, records in splits.items()}
