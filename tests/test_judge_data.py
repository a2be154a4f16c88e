"""`llava-o1 judge-data` on the demo model: every judge turn (on-policy and counterfactual) is the
server's own judge prompt, byte for byte, labelled by the scene's ground truth, in both orders; and
`train` takes answer and judge records together."""

from __future__ import annotations

import json
import re

import pytest
from helpers import run_cli

from stage_search.judge import JudgeContext
from stage_search.prompts import judge_question, parse_verdict
from stage_search.stages import StageSet
from training.labels import WHOLE_ANSWER, StageLabeler
from training.records import question_messages, read_questions, to_turns

PAIR = re.compile(r"Response 1:\n(.*)\n\nResponse 2:\n(.*)\n\nThe better response is$", re.S)
STAGE_SET = StageSet.from_names()


@pytest.fixture(scope="module")
def judge_dir(cli_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("judge") / "data"
    run_cli(cli_env, "judge-data", "--out", str(out), "--n", "24", "--scene-seed", "9", "--beam-width", "6",
            "--temperature", "1.0", "--search-seed", "1", "--counterfactual")  # fmt: skip
    return out


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def scene_of(judge_record: dict, scenes: dict[str, dict]) -> dict:
    return scenes[judge_record["id"].split("-judge-")[0]]


def test_pairs_are_found_and_written_in_both_orders(judge_dir):
    summary = json.loads((judge_dir / "judge_data.json").read_text())
    judge, generative = lines(judge_dir / "judge.jsonl"), lines(judge_dir / "judge_generative.jsonl")
    assert summary["scenes"] == 24 and sum(summary["judge_turns_written"].values()) == len(judge) > 0
    assert len(generative) == len(judge)
    # Counterfactual pairs: one conclusion pair and one whole-answer pair per scene, both orders.
    assert summary["counterfactual_turns_written"] == {"CONCLUSION": 48, "answer": 48}
    targets = [r["conversations"][-1]["value"] for r in judge]
    assert set(targets) == {"1", "2"} and targets.count("1") == targets.count("2")
    for record in generative:
        verdict = record["conversations"][-1]["value"]
        assert verdict.endswith(("I choose response 1.", "I choose response 2."))
        assert parse_verdict(verdict) in (0, 1)


@pytest.mark.parametrize("name", ["judge.jsonl", "judge_counterfactual.jsonl"])
def test_each_judge_turn_is_the_servers_judge_prompt_and_its_label_is_right(judge_dir, name):
    scenes = {r["id"]: r for r in read_questions(judge_dir / "train.jsonl")}
    records = lines(judge_dir / name)
    assert records
    for record in records:
        scene = scene_of(record, scenes)
        question, accepted, judge_turn, target = record["conversations"]
        first, second = PAIR.search(judge_turn["value"]).groups()
        stage = None if record["stage"] == WHOLE_ANSWER else next(s for s in STAGE_SET if s.name == record["stage"])
        # Rebuilt with the judge's own code from the scene alone: the same turns, byte for byte.
        context = JudgeContext(tuple(question_messages(scene)), accepted["value"], stage)
        assert to_turns(context.messages(judge_question(stage, first, second))) == [question, accepted, judge_turn]
        labeler = StageLabeler(scene, STAGE_SET)
        chosen, other = (first, second) if target["value"] == "1" else (second, first)
        labels = [
            labeler.whole_answer_is_right(text) if stage is None else labeler.is_right(stage.index, text)
            for text in (chosen, other)
        ]
        assert labels == [True, False], record["id"]


def test_the_training_collator_renders_judge_turns_as_the_engine_does(judge_dir):
    from transformers import AutoProcessor

    from models.chat_template import ChatTemplateRenderer
    from models.demo_weights import DEMO_DIR
    from training.train import Collator, read_records

    processor = AutoProcessor.from_pretrained(DEMO_DIR)
    collator, renderer = Collator(processor), ChatTemplateRenderer(processor)
    scenes = {r["id"]: r for r in read_questions(judge_dir / "train.jsonl")}
    records = lines(judge_dir / "judge.jsonl")[:6]
    for record, example in zip(records, read_records(judge_dir / "judge.jsonl")[:6], strict=True):
        _, accepted, judge_turn, _ = record["conversations"]
        messages = JudgeContext(tuple(question_messages(scene_of(record, scenes))), accepted["value"], None).messages(
            judge_turn["value"]
        )
        assert collator.conversation(example, with_answer=False) == renderer.render(messages).text
    batch = collator(read_records(judge_dir / "judge.jsonl")[:4])
    # The loss covers the verdict only: the digit, the end of the turn and its newline.
    assert ((batch["labels"] != -100).sum(dim=1) == 3).all()


def test_train_takes_answers_and_judge_turns_together(judge_dir, cli_env, tmp_path):
    from models.demo_weights import DEMO_DIR

    out = tmp_path / "model"
    run_cli(cli_env, "train", "--model", str(DEMO_DIR), "--data", str(judge_dir / "train.jsonl"),
            str(judge_dir / "judge.jsonl"), str(judge_dir / "judge_generative.jsonl"), "--out", str(out),
            "--steps", "2", "--batch-size", "4", "--save-every", "0", "--loss-average", "example")  # fmt: skip
    summary = json.loads((out / "training.json").read_text())
    assert summary["steps"] == 2 and len(summary["data"]) == 3 and summary["loss_average"] == "example"


async def test_a_model_told_the_stages_gets_the_instruction_once(tmp_path):
    """For a model not trained on the stages the search adds the instruction; judge-data must not
    add it a second time (scripted engine: its name marks no stage training)."""
    from scripted_engine import ScriptedEngine

    from stage_search.config import SearchConfig
    from stage_search.prompts import stage_instruction
    from training.judge_data import collect_candidates
    from training.synthetic_data import write_dataset

    write_dataset(tmp_path, 2, seed=3, test_fraction=0.0)
    engine = ScriptedEngine(lambda prompt, settings: [f"cand-{i}" for i in range(settings.n)])
    candidates = await collect_candidates(
        engine, read_questions(tmp_path / "train.jsonl"), SearchConfig(beam_width=2), progress=False
    )
    instruction = stage_instruction(STAGE_SET)
    assert engine.prompts and all(prompt.count(instruction) == 1 for prompt in engine.prompts)
    assert all(sum(part.text.count(instruction) for part in c.context.conversation[0].content) == 1 for c in candidates)
