"""`llava-o1 eval --data FILE.tsv` on files written here in the layouts of the six benchmarks the
paper reports (as VLMEvalKit distributes them), each with answers whose scores are known: the
rules (letter, yes/no, number), the judge for what no rule reads, per file and per category.
Then the model itself answers a benchmark file, and the judge is our own server."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
from pathlib import Path

import pytest
from helpers import API_KEY, ChatStub, chat_completion, metric_value, run_cli, shapes_image, user_text

from bench.benchmark_files import read_benchmark


def png_base64(seed: int = 0) -> str:
    buffer = io.BytesIO()
    shapes_image(color=(200, 30 + 40 * seed, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def write_tsv(path: Path, rows: list[dict]) -> Path:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, columns, delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return path


COLORS = {"A": "red", "B": "blue", "C": "green", "D": "four"}


def mmbench(image: str) -> list[dict]:
    """Options in columns, a hint, an image shared by index (as MMBench's files do); 2 of 4 right."""
    base = {"hint": "Look closely.", **COLORS, "source": "s", "l2-category": "perception", "split": "dev"}
    return [
        {"index": 10, "question": "Which color?", "answer": "A", "category": "color", "image": image,
         "prediction": "A", **base},
        {"index": 11, "question": "Which color?", "answer": "B", "category": "color", "image": image,
         "prediction": "(C) green", **base},
        {"index": 12, "question": "How many?", "answer": "D", "category": "count", "image": "10",
         "prediction": "The answer is D.", **base},
        {"index": 13, "question": "How many?", "answer": "D", "category": "count", "image": "10",
         "prediction": "I cannot tell", **base},
    ]  # fmt: skip


def mmstar(image: str) -> list[dict]:
    """Options in the question and in columns; 2 of 3 right."""
    question = "Which color is the circle?\nOptions: A: red, B: blue, C: green, D: four"
    rows = [("A", "A", "coarse perception"), ("B", "Answer: B", "coarse perception"), ("C", "D", "math")]
    return [
        {"index": i, "question": question, **COLORS, "answer": a, "category": c, "l2_category": "x",
         "bench": "MMBench", "image": image, "prediction": p}
        for i, (a, p, c) in enumerate(rows)
    ]  # fmt: skip


def ai2d(image: str) -> list[dict]:
    """No category column; 3 of 4 right (one by the option's text)."""
    answers = [("A", "A"), ("B", "B."), ("C", "green"), ("D", "A")]
    return [{"index": i, "question": "Which label?", **COLORS, "answer": a, "image": image, "prediction": p}
            for i, (a, p) in enumerate(answers)]  # fmt: skip


def hallusionbench(image: str) -> list[dict]:
    """Yes/no; 2 of 4 right (one says both)."""
    rows = [("Yes", "Yes, it is longer.", "VD"), ("Yes", "No", "VD"), ("No", "no.", "VS"), ("No", "Yes and no", "VS")]
    return [
        {"index": f"{c}_illusion_0_0_{i}_0", "category": c, "l2-category": "illusion", "subcategory": "size",
         "set_id": 0, "figure_id": 0, "question_id": i, "question": "Is the top line longer?", "answer": a,
         "image": image, "prediction": p}
        for i, (a, p, c) in enumerate(rows)
    ]  # fmt: skip


def mmvet(image: str) -> list[dict]:
    """Open answers: one exact (1.0 by rule), two for the judge (0.5 each from the scripted one)."""
    rows = [("Paris", "paris", "rec,ocr"), ("Paris", "It is the capital of France, Paris.", "rec"),
            ("red <AND> blue", "blue", "know")]  # fmt: skip
    return [{"index": i, "image": image, "question": "What is it?", "answer": a, "category": c, "prediction": p}
            for i, (a, p, c) in enumerate(rows)]  # fmt: skip


def mathvista(image: str) -> list[dict]:
    """Integer, float to a precision, multiple choice, one for the judge to read (it reads 7), one wrong."""
    common = {"image": image, "skills": "['arithmetic reasoning']", "unit": ""}
    free = {"question_type": "free_form", "choices": "", "answer_option": ""}
    return [
        {"index": 0, "question": "What is x?", "answer": "42", "answer_type": "integer", "precision": "",
         "task": "geometry problem solving", "prediction": "42", **free, **common},
        {"index": 1, "question": "What is pi?", "answer": "3.14", "answer_type": "float", "precision": "2.0",
         "task": "geometry problem solving", "prediction": "The answer is 3.1416", **free, **common},
        {"index": 2, "question": "Which?\nChoices:\n(A) 3\n(B) 4\n(C) 5", "answer": "4", "answer_type": "text",
         "precision": "", "question_type": "multi_choice", "choices": "['3', '4', '5']", "answer_option": "B",
         "task": "figure question answering", "prediction": "(B) 4", **common},
        {"index": 3, "question": "How many apples?", "answer": "7", "answer_type": "integer", "precision": "",
         "task": "figure question answering", "prediction": "about seven apples", **free, **common},
        {"index": 4, "question": "How many pears?", "answer": "10", "answer_type": "integer", "precision": "",
         "task": "figure question answering", "prediction": "9", **free, **common},
    ]  # fmt: skip


LAYOUTS = {"MMBench_DEV_EN": mmbench, "MMStar": mmstar, "AI2D_TEST": ai2d, "HallusionBench": hallusionbench,
           "MMVet": mmvet, "MathVista_MINI": mathvista}  # fmt: skip
# Per file: (accuracy with the scripted judge, accuracy without a judge).
KNOWN = {"MMBench_DEV_EN": (0.5, 0.5), "MMStar": (2 / 3, 2 / 3), "AI2D_TEST": (0.75, 0.75),
         "HallusionBench": (0.5, 0.5), "MMVet": (2 / 3, 1 / 3), "MathVista_MINI": (0.8, 0.6)}  # fmt: skip


def scripted_judge(body: dict) -> tuple[int, dict]:
    """Scores every open answer 0.5, and reads "about seven apples" as 7."""
    text = user_text(body)
    if text.endswith("Score:"):
        return 200, chat_completion("0.5")
    return 200, chat_completion("7" if "seven" in text else "unknown")


@pytest.fixture
def benchmark_files(tmp_path) -> dict[str, Path]:
    image = png_base64()
    return {name: write_tsv(tmp_path / f"{name}.tsv", layout(image)) for name, layout in LAYOUTS.items()}


def evaluate(cli_env, files: list[Path], out: Path, *extra: str) -> dict:
    """`llava-o1 eval` as a user runs it."""
    done = run_cli(cli_env, "eval", "--data", *map(str, files), "--json-out", str(out), *extra)
    return checked_against_table(json.loads(out.read_text()), done.stdout)


def evaluate_here(capsys, monkeypatch, files: list[Path], out: Path, *extra: str) -> dict:
    """The same command in this process (no model runs: the files hold the predictions), which saves
    the command's start, mostly importing vLLM for the engine flags."""
    from bench.evaluate import main

    for name in ("VLLM_LOGGING_STREAM", "VLLM_LOGGING_LEVEL"):  # the command sets them: restored after
        monkeypatch.setenv(name, os.environ.get(name, ""))
        monkeypatch.delenv(name)
    assert main(["--data", *map(str, files), "--json-out", str(out), *extra]) == 0
    return checked_against_table(json.loads(out.read_text()), capsys.readouterr().out)


def checked_against_table(result: dict, stdout: str) -> dict:
    """The JSON, once its figures are found in the printed table."""
    summary = result["summary"]
    assert f"| **all** | {summary['questions']} | {summary['accuracy']:.1%} |" in stdout
    for category, figures in summary["by_category"].items():
        assert f"| {category} | {figures['questions']} | {figures['accuracy']:.1%} |" in stdout
    return result


def test_each_layout_is_read_as_its_benchmark_scores_it(benchmark_files, tmp_path):
    kinds = {name: [row.kind for row in read_benchmark(path, tmp_path)] for name, path in benchmark_files.items()}
    assert kinds["MMBench_DEV_EN"] == ["choice"] * 4 and kinds["MMStar"] == ["choice"] * 3
    assert kinds["HallusionBench"] == ["yes_no"] * 4 and kinds["MMVet"] == ["open"] * 3
    assert kinds["MathVista_MINI"] == ["math", "math", "choice", "math", "math"]
    rows = read_benchmark(benchmark_files["MMBench_DEV_EN"], tmp_path)
    assert rows[0].prompt == "Hint: Look closely.\nWhich color?\nA. red\nB. blue\nC. green\nD. four\n" + (
        "Answer with the option's letter from the given choices directly."
    )
    assert Path(rows[2].image_path).read_bytes() == Path(rows[0].image_path).read_bytes()  # shared by index
    assert rows[0].categories == ("color",)
    assert read_benchmark(benchmark_files["AI2D_TEST"], tmp_path)[0].categories == ("all",)  # no such column


def test_six_layouts_give_their_known_accuracy_with_and_without_a_judge(benchmark_files, capsys, monkeypatch, tmp_path):
    files = list(benchmark_files.values())
    judge = ChatStub(scripted_judge)
    try:
        judged = evaluate_here(capsys, monkeypatch, files, tmp_path / "judged.json",
                               "--judge-url", judge.url, "--judge-url-model", "judge")  # fmt: skip
    finally:
        judge.close()
    plain = evaluate_here(capsys, monkeypatch, files, tmp_path / "plain.json")
    for name, path in benchmark_files.items():
        with_judge, without = KNOWN[name]
        assert judged["summary"]["by_data"][str(path)]["accuracy"] == pytest.approx(with_judge), name
        assert plain["summary"]["by_data"][str(path)]["accuracy"] == pytest.approx(without), name
    total = sum(len(layout("x")) for layout in LAYOUTS.values())
    assert judged["summary"]["questions"] == total
    assert judged["summary"]["accuracy"] == pytest.approx(sum(s["score"] for s in judged["questions"]) / total)
    # The judge saw only what no rule read: MMVet's two inexact answers and MathVista's wordy one, and
    # the unreadable letter and yes/no (which it could not read either).
    assert judged["summary"]["judge_calls"] == 5 and len(judge.bodies) == 5
    assert plain["summary"]["scored_by"]["unjudged"] == 5
    categories = judged["summary"]["by_category"]
    assert categories["rec"]["accuracy"] == pytest.approx(0.75) and categories["ocr"]["accuracy"] == 1.0
    assert categories["geometry problem solving"]["accuracy"] == 1.0
    assert categories["figure question answering"]["accuracy"] == pytest.approx(2 / 3)
    assert categories["VD"]["questions"] == 2 and categories["all"]["questions"] == 4  # AI2D has no category


def synthetic_benchmark(cli_env, folder: Path) -> Path:
    """Shapes scenes in MMBench's layout: the multiple-choice questions of synth-data, with options in
    columns and the picture in base64 (the model has seen such pictures, not these)."""
    run_cli(cli_env, "synth-data", "--out", str(folder), "--n", "30", "--seed", "33", "--test-fraction", "0")
    rows = []
    for line in (folder / "train.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "options" not in record:
            continue
        question = record["conversations"][0]["value"].replace("<image>\n", "").split("\nA. ")[0]
        image = base64.b64encode((folder / record["image"]).read_bytes()).decode()
        options = dict(zip("ABCD", record["options"], strict=True))
        rows.append({"index": record["id"], "question": question, **options, "answer": record["answer"],
                     "category": record["kind"], "image": image})  # fmt: skip
    return write_tsv(folder / "shapes_mmbench.tsv", rows)


def test_the_demo_model_answers_a_benchmark_file_and_our_server_judges(demo_server, cli_env, tmp_path):
    choice = synthetic_benchmark(cli_env, tmp_path / "shapes")
    open_answers = write_tsv(tmp_path / "open.tsv", [
        {"index": i, "image": png_base64(i), "question": "How many shapes are there?", "answer": "a few shapes",
         "category": "count"} for i in range(3)
    ])  # fmt: skip
    base = demo_server["base"]
    served = metric_value(base, "llava_o1_requests_total")
    result = evaluate(cli_env, [choice, open_answers], tmp_path / "eval.json", "--url", base, "--api-key", API_KEY,
                      "--judge-url", f"{base}/v1", "--judge-url-api-key", API_KEY)  # fmt: skip
    questions = result["questions"]
    choices = [q for q in questions if q["data"] == str(choice)]
    assert len(choices) >= 8 and all(q["kind"] == "choice" for q in choices)
    # The known accuracy: each answer's last option letter against the file's answer.
    right = [re.findall(r"\b([A-D])\b", q["prediction"])[-1:] == [q["answer"]] for q in choices]
    assert result["summary"]["by_data"][str(choice)]["accuracy"] == pytest.approx(sum(right) / len(right))
    assert any(right), "the demo model answers some of its own kind of question right"
    assert result["summary"]["strategy"] == "none" and result["summary"]["beam_width"] == 1
    assert all(q["valid"] for q in choices), "every answer in four stages the model closed itself"
    # The open answers went to the judge, over HTTP, to our own server: one call each.
    opened = [q for q in questions if q["data"] == str(open_answers)]
    assert [q["scored_by"] for q in opened] == ["judge"] * 3 and all(0.0 <= q["score"] <= 1.0 for q in opened)
    assert result["summary"]["judge_calls"] == 3
    assert metric_value(base, "llava_o1_requests_total") - served == len(questions) + 3


def test_a_file_eval_cannot_read_is_a_clear_error(capsys, monkeypatch, tmp_path):
    bad = write_tsv(tmp_path / "bad.tsv", [{"index": 0, "question": "q", "answer": "A", "image": "not an image!"}])
    with pytest.raises(SystemExit, match=r"llava-o1 eval: cannot read the benchmark file: .*bad-0"):
        evaluate_here(capsys, monkeypatch, [bad], tmp_path / "out.json")
