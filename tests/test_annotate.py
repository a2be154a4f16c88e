"""`llava-o1 annotate`: VQA records rewritten into four stages by a teacher.

With the demo model behind our own server as the teacher, on 100 synthetic records whose answers
are known: what is kept, that the output trains, and that a second run asks the teacher nothing.
The faults (garbage, 429s, timeouts, a teacher that is down, a run killed midway) come from a small
scripted teacher inside the test, on loopback: no real model misbehaves on cue.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import API_KEY, ChatStub, chat_completion, metric_value, run_cli, shapes_image, user_text, wait_for

from stage_search.stages import StageSet
from training.annotation_check import KnownAnswer, Rejected, known_answer, staged_text
from training.answer_match import number_in, option_letter, options_in_question, yes_or_no
from training.labels import is_correct
from training.records import read_questions

STAGES = StageSet.from_names()
OPTIONS = {"A": "1", "B": "2", "C": "3", "D": "red ball"}


def staged(conclusion: str, caption: str = "Two shapes.") -> str:
    return (
        f"Sure.\n<SUMMARY>I will count.</SUMMARY>\n<CAPTION>{caption}</CAPTION>\n"
        f"<REASONING>One and one make two.</REASONING>\n<CONCLUSION>{conclusion}</CONCLUSION>"
    )


# --- the rules, alone -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, letter",
    [
        ("C", "C"),
        ("(C) 3", "C"),
        ("C. 3", "C"),
        ("The answer is C.", "C"),
        ("**B**", "B"),
        ("3", "C"),  # by the option's text, when only one option contains it
        ("red ball", "D"),
        ("A or B", None),
        ("A cat sits on the mat near the window, so B", None),  # two letters: the article counts
        ("B, because the cat sits on the mat near the window", None),  # too far from the end
        ("I pick B, the cat", "B"),
        ("none of them", None),
    ],
)
def test_option_letter(answer, letter):
    assert option_letter(answer, OPTIONS) == letter


def test_yes_no_numbers_and_options_in_a_question():
    assert yes_or_no("Yes, there is a cat.") == "yes" and yes_or_no("No.") == "no"
    assert yes_or_no("yes and no") is None and yes_or_no("maybe") is None
    assert number_in("The answer is 1,250.") == 1250.0 and number_in("x = 3.5 cm") == 3.5
    assert number_in("2 or 3") is None
    assert options_in_question("How many?\nA. 1\nB. 2\n(C) 3") == {"A": "1", "B": "2", "C": "3"}
    assert options_in_question("Look at C. It is red.") == {}


def test_staged_text_checks_every_stage_and_rewrites_the_layout():
    text, parts = staged_text(staged("3"), STAGES)
    assert text.startswith("<SUMMARY>I will count.</SUMMARY>\n\n<CAPTION>") and text.endswith("</CONCLUSION>")
    assert parts["CONCLUSION"] == "3"
    bad = {
        "no <CAPTION>...</CAPTION> stage": staged("3").replace("<CAPTION>Two shapes.</CAPTION>", ""),
        "the CAPTION stage is empty": staged("3", caption="  "),
        "the CAPTION stage is out of order": "<CAPTION>c</CAPTION><SUMMARY>s</SUMMARY><REASONING>r</REASONING>"
        "<CONCLUSION>3</CONCLUSION>",
        "the REASONING stage appears more than once": staged("3") + "<REASONING>again</REASONING>",
    }
    for reason, reply in bad.items():
        with pytest.raises(Rejected, match=re.escape(reason)):
            staged_text(reply, STAGES)


def test_known_answers_decide_by_letter_text_or_number_and_leave_the_rest_to_the_teacher():
    choice = known_answer("3", OPTIONS)  # an option's text becomes its letter
    assert choice == KnownAnswer("C", OPTIONS) and not choice.needs_teacher("C")
    with pytest.raises(Rejected, match="does not give"):
        choice.needs_teacher("B")
    with pytest.raises(Rejected, match="names no single option"):
        choice.needs_teacher("A or B")
    count = known_answer("3", {})
    assert not count.needs_teacher("The answer is 3.") and not count.needs_teacher("There are 3 circles.")
    with pytest.raises(Rejected):
        count.needs_teacher("4")
    assert known_answer("a red ball", {}).needs_teacher("It is a ball, and it is red")


# --- our own server as the teacher ------------------------------------------------------------


def vqa_records(cli_env: dict[str, str], folder: Path, n: int) -> Path:
    """synth-data's scenes as a VQA set: each question with its short answer (not the stages)."""
    run_cli(cli_env, "synth-data", "--out", str(folder), "--n", str(n), "--seed", "21", "--test-fraction", "0")
    lines = []
    for line in (folder / "train.jsonl").read_text().splitlines():
        record = json.loads(line)
        record["conversations"][1]["value"] = record["answer"]
        lines.append(json.dumps(record))
    (folder / "vqa.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "vqa.jsonl"


def test_the_demo_server_as_teacher_keeps_what_matches_trains_and_resumes(demo_server, cli_env, tmp_path):
    vqa = vqa_records(cli_env, tmp_path / "vqa", 100)
    out = tmp_path / "staged" / "staged.jsonl"  # another folder: image paths are rewritten
    out.parent.mkdir()
    base = demo_server["base"]
    # The demo model answers in the four stages by itself, so it is asked the bare question; the
    # server returns them tagged in `content` when asked.
    command = ["annotate", "--in", str(vqa), "--out", str(out), "--teacher-url", f"{base}/v1"]
    command += ["--teacher-model", "llava-o1-demo", "--api-key", API_KEY, "--prompt", "question-only"]
    command += ["--extra-body", json.dumps({"reasoning": {"output": "tagged"}}), "--concurrency", "8"]
    first = run_cli(cli_env, *command)
    kept = read_questions(out)
    rejects = [json.loads(line) for line in out.with_name("staged.rejects.jsonl").read_text().splitlines()]
    assert len(kept) + len(rejects) == 100
    assert f"{len(kept)} kept, {len(rejects)} rejected" in first.stderr

    # Whether the teacher's conclusion gives the known answer, read with eval's own scorer.
    records = {r["id"]: r for r in read_questions(vqa)}
    replies = {r["id"]: r["reply"] for r in rejects} | {r["id"]: r["conversations"][1]["value"] for r in kept}
    matching = [key for key, reply in replies.items() if is_correct(records[key], STAGES.parse(reply)["CONCLUSION"])]
    kept_ids = {r["id"] for r in kept}
    assert len(matching) >= 50, f"the demo model should mostly answer right: {len(matching)} of 100"
    share = sum(key in kept_ids for key in matching) / len(matching)
    assert share >= 0.95, f"{share:.0%} of the {len(matching)} matching records kept"
    assert kept_ids <= set(matching), "a record whose conclusion is wrong was kept"
    assert all(r["reason"] for r in rejects)
    for record in kept:  # the training layout, its image found from the output's folder
        assert Path(record["_image_path"]).exists()
        assert [t["from"] for t in record["conversations"]] == ["human", "gpt"]
        assert record["conversations"][0]["value"].startswith("<image>\n")
        assert all(STAGES.parse(record["conversations"][1]["value"]).values())

    # The second run finds every record done: not one request reaches the teacher.
    served = metric_value(base, "llava_o1_requests_total")
    second = run_cli(cli_env, *command)
    assert metric_value(base, "llava_o1_requests_total") == served
    assert "0 kept, 0 rejected, 100 already done" in second.stderr and "0 teacher calls" in second.stderr
    assert len(out.read_text().splitlines()) == len(kept)

    trained = run_cli(cli_env, "train", "--data", str(out), "--out", str(tmp_path / "model"), "--steps", "1")
    assert "trained to step 1" in trained.stdout + trained.stderr


# --- faults, from a scripted teacher ----------------------------------------------------------


class ScriptedTeacher(ChatStub):
    """A teacher whose behaviour for a record is written in the record's question: good, wrong,
    garbage, notags, refused, 429x2, slow, down, free-yes, free-no."""

    def __init__(self, delay_s: float = 0.0):
        self.calls: list[str] = []  # the question (or "check:" + question) of every request
        self.delay_s = delay_s
        self.lock = threading.Lock()
        super().__init__(self.answer)

    def answer(self, body: dict) -> tuple[int, dict | bytes]:
        text = user_text(body)
        checking = "Known answer:" in text
        question = re.search(r"Question: (\S+)", text).group(1)
        with self.lock:
            self.calls.append(("check:" if checking else "") + question)
            seen = self.calls.count(question)
        time.sleep(self.delay_s)
        if checking:
            return 200, chat_completion("Yes." if "free-yes" in question else "No, they differ.")
        known = re.search(r"Correct answer: (.+)", text).group(1)
        if "429x2" in question and seen <= 2:
            return 429, {"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit"}}
        if "slow" in question and seen == 1:
            time.sleep(3)  # past the client's timeout: it gives up and asks again
        if "down" in question:
            return 503, {"error": {"message": "overloaded", "type": "server_error"}}
        if "refused" in question:
            return 400, {"error": {"message": "image too large", "type": "invalid_request_error", "param": "messages"}}
        if "garbage" in question:
            return 200, b"<html>oops</html>"
        if "notags" in question:
            return 200, chat_completion(f"The answer is {known}.")
        if "free" in question:
            return 200, chat_completion(staged("a round ball, red all over"))
        return 200, chat_completion(staged("7" if "wrong" in question else known))


def write_records(folder: Path, questions: list[tuple[str, str]]) -> Path:
    """Records with one shared picture: (question, known answer) each."""
    shapes_image().save(folder / "picture.png")
    lines = [
        json.dumps(
            {
                "id": f"r{i}",
                "image": "picture.png",
                "conversations": [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}],
            }
        )
        for i, (q, a) in enumerate(questions)
    ]
    path = folder / "vqa.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def annotate(cli_env, teacher: ScriptedTeacher, vqa: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = ["llava-o1", "annotate", "--in", str(vqa), "--out", str(out), "--teacher-url", teacher.url]
    command += ["--teacher-model", "teacher", "--no-progress", "--timeout", "1", "--retries", "3", *extra]
    return subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def teacher():
    scripted = ScriptedTeacher()
    yield scripted
    scripted.close()


def test_garbage_is_rejected_with_a_reason_and_busy_or_slow_teachers_are_retried(teacher, cli_env, tmp_path):
    questions = [
        ("good\nA. 1\nB. 2\nC. 3", "C"),
        ("wrong", "3"),
        ("garbage", "3"),
        ("notags", "3"),
        ("refused", "3"),
        ("429x2", "3"),
        ("slow", "3"),
        ("free-yes", "a red ball"),
        ("free-no", "a red ball"),
    ]
    out = tmp_path / "staged.jsonl"
    vqa = write_records(tmp_path, questions)
    turns = [{"from": "human", "value": "<image>\ngood"}, {"from": "gpt", "value": "3"}]
    lost = {"id": "lost", "image": "lost.png", "conversations": turns}
    unknown = {"id": "unknown", "conversations": turns[:1]}
    with vqa.open("a") as lines:  # a line that is no record, a missing image, no answer
        lines.write("{not json\n" + json.dumps(lost) + "\n" + json.dumps(unknown) + "\n")
    done = annotate(cli_env, teacher, vqa, out)
    assert done.returncode == 0, done.stderr
    kept = {r["id"] for r in map(json.loads, out.read_text().splitlines())}
    reasons = {
        r["id"]: r["reason"] for r in map(json.loads, (tmp_path / "staged.rejects.jsonl").read_text().splitlines())
    }
    assert kept == {"r0", "r5", "r6", "r7"}
    assert "does not give the answer '3'" in reasons["r1"]
    assert reasons["r2"] == "the teacher's reply is not a chat completion"
    assert reasons["r3"] == "no <SUMMARY>...</SUMMARY> stage"
    assert reasons["r4"].startswith("the teacher refused the request: HTTP 400 image too large")
    assert "does not give 'a red ball'" in reasons["r8"]
    assert reasons["line-10"] == "not a record with a human turn in `conversations`"
    assert reasons["lost"] == "no image file 'lost.png' next to the input"
    assert reasons["unknown"].startswith("no known answer")
    assert teacher.calls.count("429x2") == 3 and teacher.calls.count("slow") == 2
    assert teacher.calls.count("check:free-yes") == 1 and teacher.calls.count("refused") == 1
    assert "4 kept, 8 rejected" in done.stderr and f"{len(teacher.calls)} teacher calls" in done.stderr
    # The paper's way: the teacher is told the answer (the letter, for multiple choice) and the format.
    first = next(body for body in teacher.bodies if user_text(body).startswith("Question: good"))
    assert (
        "Correct answer: C" in json.dumps(first) and "letter of the correct option" in first["messages"][0]["content"]
    )
    assert first["model"] == "teacher" and first["messages"][1]["content"][0]["image_url"]["url"].startswith(
        "data:image/png;base64,"
    )


def test_a_record_the_teacher_never_answers_is_retried_by_the_next_run(teacher, cli_env, tmp_path):
    vqa = write_records(tmp_path, [("good", "3"), ("down", "3")])
    out = tmp_path / "staged.jsonl"
    done = annotate(cli_env, teacher, vqa, out, "--retries", "1")  # the last --retries wins
    assert done.returncode == 1 and "1 without an answer from the teacher" in done.stderr
    assert teacher.calls.count("down") == 2  # the first try and one retry
    assert not (tmp_path / "staged.rejects.jsonl").read_text()  # not a reject: nothing was wrong with it
    again = annotate(cli_env, teacher, vqa, out, "--retries", "1")
    assert "1 already done" in again.stderr and teacher.calls.count("good") == 1 and teacher.calls.count("down") == 4


def test_a_run_killed_midway_resumes_without_asking_again(cli_env, tmp_path):
    teacher = ScriptedTeacher(delay_s=0.25)
    try:
        vqa = write_records(tmp_path, [(f"good-{i}", str(i)) for i in range(24)])
        out = tmp_path / "staged.jsonl"
        command = ["llava-o1", "annotate", "--in", str(vqa), "--out", str(out), "--teacher-url", teacher.url]
        command += ["--teacher-model", "teacher", "--no-progress", "--concurrency", "2"]
        run = subprocess.Popen(command, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 6, timeout=60)
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        written = out.read_bytes().count(b"\n")  # whole lines: a cut-short one is redone
        time.sleep(0.5)  # a request sent just before the kill still reaches the teacher: count it here
        asked = len(teacher.calls)
        assert written < 24, "the run finished before it was killed"
        done = annotate(cli_env, teacher, vqa, out)
        assert done.returncode == 0, done.stderr
        ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
        assert sorted(ids) == sorted(f"r{i}" for i in range(24)), "every record once"
        assert len(teacher.calls) - asked == 24 - written, "only the records not written were asked again"
        assert f"{written} already done" in done.stderr
    finally:
        teacher.close()


def test_annotate_refuses_bad_arguments(cli_env, tmp_path):
    command = ["llava-o1", "annotate", "--in", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o.jsonl")]
    command += ["--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "t"]
    missing = subprocess.run(command, env=cli_env, capture_output=True, text=True)
    assert missing.returncode != 0 and "no such file" in missing.stderr
    (tmp_path / "none.jsonl").write_text("")
    not_an_object = subprocess.run([*command, "--extra-body", "[1]"], env=cli_env, capture_output=True, text=True)
    assert not_an_object.returncode != 0 and "--extra-body must be a JSON object" in not_an_object.stderr
