"""The verifier seam: which model judges (the model itself, a second model in this process, one on its
own server), the demo model's default, the pointwise verifier's training records, and the figures
the eval table reads from its scores."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import pytest
from helpers import image_question

from models.demo_weights import DEMO_VERIFIER_DIR, DEMO_VERIFIER_NAME
from stage_search.choices import options_in_question
from stage_search.config import SearchConfig
from stage_search.search import run_search
from training.verifier_check import auc


def serve_args(*argv: str):
    from server.serve import build_parser

    return build_parser().parse_args(list(argv))


def test_the_demo_model_is_judged_by_its_verifier_unless_told_otherwise(tmp_path, monkeypatch):
    import server.default_model as default_model

    # A stand-in folder, so the rule is tested whether or not this checkout ships the verifier.
    shipped = tmp_path / "demo_verifier"
    monkeypatch.setattr(default_model, "DEMO_VERIFIER_DIR", shipped)
    args = serve_args()
    default_model.use_default_model(args)
    assert args.judge_model_path is None, "no verifier shipped: the demo model judges itself"
    shipped.mkdir()
    (shipped / "config.json").write_text("{}")
    args = serve_args()
    default_model.use_default_model(args)
    assert args.judge_model_path == str(shipped)
    args = serve_args("--self-judge")
    default_model.use_default_model(args)
    assert args.judge_model_path is None
    args = serve_args("--judge-engine-url", "http://127.0.0.1:9")
    default_model.use_default_model(args)
    assert args.judge_model_path is None
    args = serve_args("--model", "/some/model")  # a model given keeps self-judging
    default_model.use_default_model(args)
    assert args.judge_model_path is None


def test_one_verifier_at_a_time():
    from models.engine_factory import start_engine

    args = serve_args("--judge-engine-url", "http://127.0.0.1:9", "--judge-model-path", "/x")
    with pytest.raises(SystemExit, match="one verifier"):
        start_engine(args)


def test_the_verifiers_name():
    from models.engine_factory import judge_model_name

    assert judge_model_name(str(DEMO_VERIFIER_DIR)) == DEMO_VERIFIER_NAME
    assert judge_model_name("/models/my-reward-model") == "my-reward-model"


@pytest.mark.asyncio(loop_scope="session")
async def test_a_second_model_in_this_process_scores_for_the_first(tiny_model_dir, tmp_path):
    """`--judge-model-path` with `--judge-engine hf`: the main model samples, the verifier (another
    tiny model, of another seed) is asked for every score, pointwise by default."""
    from models.engine_factory import start_engine
    from training.tiny_model import build_tiny_model

    verifier_dir = build_tiny_model(tmp_path / "my-verifier", seed=77)
    engine = start_engine(
        serve_args(
            "--model",
            str(tiny_model_dir),
            "--engine",
            "hf",
            "--judge-model-path",
            str(verifier_dir),
            "--judge-engine",
            "hf",
        )
    )
    try:
        assert engine.judge_engine() is not engine and engine.judge_engine().model_name == "my-verifier"
        before = engine.judge_engine().stats().prefix_cache_queries
        result = await run_search(
            engine, image_question("How many shapes?"), SearchConfig(beam_width=3, max_tokens_per_stage=8, seed=3)
        )
        assert result.verifier == "my-verifier" and result.verifier_form == "pointwise"
        scores = [s for stage in result.stages for s in stage.scores]
        assert scores and result.usage.judge_calls == len(scores)
        assert result.usage.judge_tokens == sum(s.judge_tokens for s in scores)
        # The verifier's engine read every scored prompt; the main engine read none of them.
        assert engine.judge_engine().stats().prefix_cache_queries - before == sum(s.judge_tokens - 1 for s in scores)
    finally:
        await engine.shutdown()


def test_auc_counts_ties_as_half():
    assert auc([2.0, 3.0], [1.0]) == 1.0
    assert auc([1.0], [2.0, 3.0]) == 0.0
    assert auc([1.0], [1.0]) == 0.5
    assert auc([0.0, 2.0], [1.0, 1.0]) == 0.5


def test_verifier_records_are_the_search_prompt_and_train_on_their_targets(tmp_path):
    """Counterfactual records are the pointwise prompt the search sends, labelled both ways; drills
    learn only their target characters (letters, or the verdict)."""
    from transformers import AutoProcessor

    from models.demo_weights import DEMO_DIR
    from training.records import question_messages, read_questions, to_turns
    from training.synthetic_data import write_dataset
    from training.train import Collator, read_records
    from training.verifier_data import (
        bare_verdict_drills,
        verdict_drills,
        write_counterfactual_verifier,
        write_records,
    )

    write_dataset(tmp_path, 3, 5, test_fraction=0.0)
    counts = write_counterfactual_verifier(tmp_path, seed=2)
    assert counts == {f"{stage}:{verdict}": 3 for stage in ("CAPTION", "REASONING", "CONCLUSION", "answer")
                      for verdict in ("no", "yes")}  # fmt: skip
    scenes = {r["id"]: r for r in read_questions(tmp_path / "train.jsonl")}
    quoted = 0
    for line in (tmp_path / "verifier_counterfactual.jsonl").read_text().splitlines():
        record = json.loads(line)
        scene = scenes[record["id"].split("-verify-")[0]]
        turns = record["conversations"]
        assert turns[0] == to_turns(question_messages(scene))[0]
        assert turns[-1]["value"] == ("yes" if record["right"] else "no")
        # The candidate ends the verifier's question, closed by its tag; a conclusion that picks an
        # option is followed by the option, quoted.
        options = options_in_question(turns[0]["value"])
        picked = re.search(r"<CONCLUSION>([A-D])</CONCLUSION>$", turns[2]["value"].rsplit("\n", 1)[0])
        if record["stage"] == "CONCLUSION" and options:
            letter = picked.group(1)
            quoted += 1
            assert turns[2]["value"].endswith(f"</CONCLUSION>\n(option {letter}: {options[letter]})")
        elif record["stage"] != "answer":
            assert turns[2]["value"].endswith(f"</{record['stage']}>")
    assert quoted > 0, "no multiple-choice conclusion among the records"
    processor = AutoProcessor.from_pretrained(DEMO_DIR)
    bare = write_records(tmp_path / "bare.jsonl", bare_verdict_drills(1, 0))
    verdicts = write_records(tmp_path / "verdicts.jsonl", verdict_drills(2, 0))
    examples = read_records([bare, verdicts])
    batch = Collator(processor)(examples)
    learnt = [
        processor.tokenizer.decode([int(t) for t, label in zip(row, labels, strict=True) if label != -100])
        for row, labels in zip(batch["input_ids"], batch["labels"], strict=True)
    ]
    for text, record in zip(learnt, [*bare_verdict_drills(1, 0), *verdict_drills(2, 0)], strict=True):
        # one verdict to a record, learnt with the turn's end, never the question or the reasoning
        assert record["conversations"][-1]["value"] in ("yes", "no") and "REASONING" not in text
        assert text.replace(" ", "").startswith(record["conversations"][-1]["value"])
    for record in [*verdict_drills(2, 0), *bare_verdict_drills(2, 0)]:  # each quotes the option it picks
        options = options_in_question(record["conversations"][0]["value"]) or None
        turn = record["conversations"][-2]
        letter = re.search(r"<CONCLUSION>([A-D])</CONCLUSION>", turn["value"]).group(1)
        if options:
            assert turn["value"].endswith(f"</CONCLUSION>\n(option {letter}: {options[letter]})")
        else:  # bare: no options in the record, the quote only
            assert re.search(rf"</CONCLUSION>\n\(option {letter}: \w+\)$", turn["value"])


def test_verdict_drills_judge_every_option_once_and_the_right_one_is_easy_to_mistake():
    """Each drill judges its four options once, one to a record, the four in one group: exactly one
    "yes", the option whose value ends the reasoning. That value is one a wrong conclusion would
    take for it: a count with a neighbour among the options, or a color the reasoning names beside
    another option's."""
    from training.verifier_data import verdict_drills

    groups: dict[str, list[dict]] = {}
    for record in verdict_drills(200, 3):
        groups.setdefault(record["group"], []).append(record)
    assert len(groups) == 200
    kinds = set()
    for members in groups.values():
        turns = members[0]["conversations"]
        assert len(members) == 4 and all(len(m["conversations"]) == 4 for m in members)
        assert all(m["conversations"][:2] == turns[:2] for m in members)  # one context
        options = options_in_question(turns[0]["value"])
        verdicts = {re.search(r"<CONCLUSION>([A-D])</CONCLUSION>", m["conversations"][2]["value"]).group(1):
                    m["conversations"][3]["value"] for m in members}  # fmt: skip
        assert sorted(verdicts) == ["A", "B", "C", "D"] and list(verdicts.values()).count("yes") == 1
        assert all(m["right"] == (m["conversations"][3]["value"] == "yes") for m in members)
        truth = options[next(letter for letter, v in verdicts.items() if v == "yes")]
        reasoning = turns[1]["value"].strip()
        if truth.isdigit():
            kinds.add("count")
            assert reasoning.endswith(f"gives {truth}.</REASONING>")
            near = [v for v in options.values() if {str(int(v) - 1), str(int(v) + 1)} & set(options.values())]
            assert truth in near or not near  # (four counts may have no neighbours at all: 1, 3, 5, 7)
        elif truth == "same":
            kinds.add("same")
            assert reasoning.endswith("the numbers are the same.</REASONING>")
        else:
            kinds.add("tie" if " tie with " in reasoning else "color")
            named = [o for o in options.values() if o != truth and re.search(rf"\b{o}\b", reasoning)]
            assert re.search(rf"(more |so |; ){truth} (shapes|has|is)", reasoning) and named, reasoning
    assert kinds == {"count", "same", "tie", "color"}
    # A work folder rebuilds its drills from their seeds; a run resumed from a committed snapshot
    # must see the data its phases began on: pinned by their digest.
    from training.verifier_data import bare_verdict_drills

    drills = [verdict_drills(40, 603), bare_verdict_drills(40, 604)]
    assert hashlib.sha256(json.dumps(drills).encode()).hexdigest()[:16] == "b79be3ea559fbc83"


def test_the_verifiers_progress_is_saved_small_and_a_fresh_work_folder_goes_on_from_it(tmp_path):
    """Between sittings the recipe commits a snapshot: finished phases' records, and only the
    latest weights (a checkpoint's, without the optimizer's state); a fresh work folder resumes
    from it at the same phase and step."""
    from training.train import latest_checkpoint
    from training.verifier_recipe import PHASES, _finished_steps, resume_from_progress, save_progress

    work = tmp_path / "work"
    done, going = work / "phase-1", work / "phase-2"
    for folder, steps in ((done, PHASES[0].steps), (going, 300)):
        (folder / "checkpoint-100").mkdir(parents=True)
        for name in ("config.json", "model.safetensors", "optimizer.pt"):
            (folder / "checkpoint-100" / name).write_text(name)
        (folder / "config.json").write_text("{}")
        (folder / "training.json").write_text(json.dumps({"steps": steps}))
    (going / "checkpoint-300").mkdir()
    for name in ("config.json", "model.safetensors", "optimizer.pt"):
        (going / "checkpoint-300" / name).write_text(name)
    (done / "check.json").write_text("{}")
    (work / "phase-3").mkdir()  # begun, no weights yet

    snapshot = tmp_path / "progress"
    save_progress(work, snapshot)
    files = sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())
    assert files == [
        "phase-1/check.json",
        "phase-1/training.json",
        "phase-2/checkpoint-300/config.json",
        "phase-2/checkpoint-300/model.safetensors",
        "phase-2/training.json",
        "phases.json",
    ]
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    older = tuple(dataclasses.replace(phase, name=f"older {phase.name}") for phase in PHASES)
    with pytest.raises(ValueError, match="other phases"):  # a snapshot of another recipe's phases
        resume_from_progress(fresh, snapshot, older)
    assert not any(fresh.iterdir())
    assert resume_from_progress(fresh, snapshot)
    assert _finished_steps(fresh / "phase-1") == PHASES[0].steps
    assert _finished_steps(fresh / "phase-2") == 300 < PHASES[1].steps
    assert latest_checkpoint(fresh / "phase-2") == fresh / "phase-2" / "checkpoint-300"
    assert not resume_from_progress(fresh, snapshot), "a folder with phases of its own keeps them"


def test_the_swires_cutoff_is_the_mean_plus_a_quarter_deviation_of_reasoning_log_odds():
    import math

    from training.verifier_check import swires_cutoff

    scored = [{"stage": "REASONING", "p_yes": 1 / (1 + math.exp(-x))} for x in (-1.0, 1.0)]
    scored += [{"stage": "CONCLUSION", "p_yes": 0.999}]  # other stages do not count
    assert swires_cutoff(scored) == pytest.approx(0.2533 * math.sqrt(2))


def test_swires_retraces_at_the_cutoff_its_verifier_was_calibrated_with(tmp_path):
    from server.serve import settings_from

    # The shipped demo verifier's recipe wrote its cutoff; serve (no flags) judges the demo with it.
    calibrated = json.loads((DEMO_VERIFIER_DIR / "training.json").read_text())["swires_cutoff"]
    assert calibrated != 0.0
    assert settings_from(serve_args()).search.swires.cutoff == pytest.approx(calibrated)
    # The flag wins; a folder without a calibrated cutoff (or the model judging itself) keeps 0.
    assert settings_from(serve_args("--swires-cutoff=-1.5")).search.swires.cutoff == -1.5
    other = tmp_path / "verifier"
    other.mkdir()
    (other / "training.json").write_text(json.dumps({"recipe": "another"}))
    assert settings_from(serve_args("--judge-model-path", str(other))).search.swires.cutoff == 0.0
    assert settings_from(serve_args("--self-judge")).search.swires.cutoff == 0.0
    (other / "training.json").write_text(json.dumps({"swires_cutoff": 2.25}))
    assert settings_from(serve_args("--judge-model-path", str(other))).search.swires.cutoff == 2.25


def test_the_check_splits_drills_by_the_kind_of_question():
    from training.verifier_check import question_kind, summarize
    from training.verifier_data import verdict_drills

    drills = verdict_drills(40, 5)
    assert {question_kind(d) for d in drills} == {"count", "compare", "most", "most, tie"}
    # a verifier that says yes to every right candidate and no to the rest is right on every pair
    scored = [{**d, "p_yes": float(d["right"]), "stage": question_kind(d)} for d in drills]
    assert all(s["pairwise_accuracy"] == 1.0 and s["pairs"] > 0 for s in summarize(scored).values())
