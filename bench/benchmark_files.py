"""The public benchmarks' files as VLMEvalKit distributes them (MMStar, MMBench, AI2D, HallusionBench,
MMVet, MathVista and others of the same layouts): a TSV, one question per row, the image in base64.

Columns read: `index`, `image` (base64; a short value names the `index` of the row whose image it
shares, as MMBench's files do), `question`, `hint`, option columns `A`..`E`, `answer`, `category`
(`task` for MathVista; MMVet's lists capabilities, comma-separated), MathVista's `question_type`,
`answer_type`, `precision`, `choices` and `answer_option`, and `prediction` when the file is a
result file with the model's answers already in it.

A row is scored one of four ways (`Row.kind`):
- "choice": by the option letter the answer picks (options from the columns, or written into the
  question as MMStar does);
- "yes_no": by yes or no (HallusionBench);
- "math": MathVista's free-form answers, by the number (rounded to the row's precision) or the text;
- "open": free text (MMVet), by an OpenAI-compatible judge's score from 0 to 1 (`--judge-url`).
A rule that cannot read an answer (no letter, no number) leaves it to the judge too, as the
benchmarks' own scorers do with GPT.
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import io
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.answer_match import number_in, option_letter, options_in_question, same_text, yes_or_no

OPTION_COLUMNS = tuple(string.ascii_uppercase[:9])  # A-E in the six; some sets go further
CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."
YES_NO_INSTRUCTION = "Answer yes or no."
_REFERENCE_LIMIT = 64  # an image field this short names another row's index


@dataclass(frozen=True)
class Row:
    index: str
    kind: str  # choice, yes_no, math, open
    prompt: str  # what the model is asked
    question: str  # the question alone, for the judge
    answer: str  # a letter for choice rows
    categories: tuple[str, ...]
    image_path: str | None
    options: dict[str, str] = field(default_factory=dict)
    answer_type: str = "text"  # math rows: integer, float, text, list
    precision: int | None = None
    prediction: str | None = None  # in a result file

    def rule_score(self, prediction: str) -> float | None:
        """1.0 or 0.0 when a rule reads the answer; None when only a judge can."""
        if self.kind == "choice":
            letter = option_letter(prediction, self.options)
            return None if letter is None else float(letter == self.answer)
        if self.kind == "yes_no":
            said = yes_or_no(prediction)
            return None if said is None else float(said == self.answer.lower())
        if self.kind == "math":
            return self.math_score(prediction)
        return 1.0 if same_text(prediction, self.answer) else None

    def math_score(self, prediction: str) -> float | None:
        if self.answer_type in ("integer", "float"):
            got, expected = number_in(prediction), number_in(self.answer)
            if got is None or expected is None:
                return None
            if self.answer_type == "float" and self.precision is not None:
                return float(round(got, self.precision) == round(expected, self.precision))
            return float(got == expected)
        return 1.0 if same_text(prediction, self.answer) else None


def read_benchmark(path: str | Path, image_dir: str | Path) -> list[Row]:
    """The rows of one benchmark TSV; images are written to `image_dir` for the engine to read."""
    csv.field_size_limit(sys.maxsize)  # base64 images are long fields
    path, image_dir = Path(path), Path(image_dir)
    with path.open(newline="", encoding="utf-8") as file:
        lines = list(csv.DictReader(file, delimiter="\t"))
    images = {str(line.get("index", "")): line.get("image", "") for line in lines}
    rows = []
    for number, line in enumerate(lines):
        index = str(line.get("index") or number)
        image = line.get("image") or ""
        if 0 < len(image) <= _REFERENCE_LIMIT and image in images:
            image = images[image]
        rows.append(_row(line, index, _write_image(image, image_dir / f"{path.stem}-{number}")))
    return rows


def _write_image(data: str, stem: Path) -> str | None:
    if not data:
        return None
    if data.startswith("["):  # several images: the first (the six benchmarks have one each)
        data = ast.literal_eval(data)[0]
    try:
        raw = base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{stem.name}: the image is not base64 ({exc})") from exc
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as opened:
        path = stem.with_suffix(".jpg" if opened.format == "JPEG" else ".png")
        if opened.format in ("JPEG", "PNG"):
            path.write_bytes(raw)
        else:  # GIF, WebP, ...: PNG, which every engine reads
            opened.convert("RGB").save(path)
    return str(path)


def _cell(line: dict, name: str) -> str:
    value = line.get(name)
    return "" if value is None or value.strip().lower() in ("", "nan", "none") else value.strip()


def _row(line: dict, index: str, image_path: str | None) -> Row:
    question, answer = _cell(line, "question"), _cell(line, "answer")
    category = _cell(line, "category") or _cell(line, "task") or "all"
    categories = tuple(c.strip() for c in category.split(",") if c.strip()) or ("all",)
    prediction = line.get("prediction")
    common: dict[str, Any] = dict(
        index=index, question=question, categories=categories, image_path=image_path, prediction=prediction
    )
    if _cell(line, "question_type"):  # MathVista: its question column is the whole prompt already
        return _math_row(line, question, answer, common)
    columns = {c: _cell(line, c) for c in OPTION_COLUMNS if _cell(line, c)}
    options = columns or options_in_question(question)
    letter = answer.strip("() ").upper()[:1]
    if options and letter in options:
        hint = _cell(line, "hint")
        listed = "".join(f"\n{key}. {text}" for key, text in columns.items())
        prompt = (f"Hint: {hint}\n" if hint else "") + question + listed + "\n" + CHOICE_INSTRUCTION
        return Row(kind="choice", prompt=prompt, answer=letter, options=options, **common)
    if answer.lower() in ("yes", "no"):
        return Row(kind="yes_no", prompt=f"{question}\n{YES_NO_INSTRUCTION}", answer=answer, **common)
    return Row(kind="open", prompt=question, answer=answer, **common)


def _math_row(line: dict, question: str, answer: str, common: dict[str, Any]) -> Row:
    precision = _cell(line, "precision")
    if _cell(line, "question_type") == "multi_choice":
        choices = ast.literal_eval(_cell(line, "choices") or "[]")
        options = {string.ascii_uppercase[i]: str(text) for i, text in enumerate(choices)}
        letter = _cell(line, "answer_option") or next((k for k, v in options.items() if same_text(v, answer)), "")
        return Row(kind="choice", prompt=question, answer=letter, options=options, **common)
    return Row(
        kind="math",
        prompt=question,
        answer=answer,
        answer_type=_cell(line, "answer_type") or "text",
        precision=int(float(precision)) if precision else None,
        **common,
    )
