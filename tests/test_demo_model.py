"""The committed demo model, the README's way: `ask` uses it by default and counts a shapes picture
from `synth-data` right, in four stages it closes itself; with stage search, `--json` prints the
whole trace."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import STAGES, count, run_cli
from PIL import Image

from models.demo_weights import DEMO_VERIFIER_NAME
from training.synthetic_data import COLORS


@pytest.fixture(scope="module")
def asked(cli_env, tmp_path_factory) -> tuple[int, dict, dict]:
    """The README's picture asked twice, side by side (most of each run is vLLM starting up): greedy
    without search, and stage search at width 4 with the demo verifier. (yellow count, greedy
    result, searched result)."""
    folder = tmp_path_factory.mktemp("ask")
    run_cli(cli_env, "synth-data", "--out", str(folder / "shapes"), "--n", "10", "--seed", "1")
    image = folder / "shapes" / "images" / "000000.png"
    truth = count(Image.open(image).convert("RGB"), COLORS["yellow"])
    question = ["ask", "--image", str(image), "--question", "How many yellow shapes are in the image?", "--json"]
    greedy = [*question, "--strategy", "none", "--temperature", "0"]
    searched = [*question, "--strategy", "stage", "--beam-width", "4", "--max-tokens-per-stage", "12"]
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda args: run_cli(cli_env, *args), [greedy, searched]))
    return truth, json.loads(done[0].stdout), json.loads(done[1].stdout)


def test_ask_uses_the_demo_model_and_counts_right(asked):
    truth, result, _ = asked
    assert truth > 0  # the README's picture: a count of zero would prove little
    assert [s["name"] for s in result["stages"]] == STAGES
    assert all(s["candidates"][0]["finish_reason"] == "stop" for s in result["stages"])  # it closed every stage
    assert result["answer"] == f"The answer is {truth}."


def test_ask_prints_the_search_and_its_trace_as_json(asked):
    _, _, result = asked
    assert [s["name"] for s in result["stages"]] == STAGES
    # The demo model is judged by its shipped verifier, one score per distinct candidate.
    assert (result["verifier"], result["verifier_form"]) == (DEMO_VERIFIER_NAME, "pointwise")
    for stage in result["stages"]:
        assert len(stage["candidates"]) == 4
        distinct = [c["index"] for c in stage["candidates"] if c["merged_into"] is None]
        assert stage["matches"] == []
        assert [s["index"] for s in stage["scores"]] == (distinct if len(distinct) > 1 else [])
        assert stage["winner"] in range(4)
    assert result["answer"] == result["stages"][-1]["text"]
    assert set(result["usage"]) >= {"prompt_tokens", "completion_tokens", "judge_tokens"}


def test_recipe_trains_each_phase_on_its_own_data(tmp_path):
    from training.demo_recipe import ANSWERS, COUNTERFACTUAL_CONCLUSION, JUDGE, JudgeSet, Phase, build_demo_model

    # Phase 2 trains on judge turns made from phase 1's model (on-policy and counterfactual) beside answers.
    phases = (
        Phase(1e-3, 1.0, records=8),
        Phase(
            5e-4,
            1.0,
            data_seed=7,
            records=8,
            sources=(ANSWERS, COUNTERFACTUAL_CONCLUSION, JUDGE),
            loss_average="example",
        ),
    )
    judge_sets = (JudgeSet(4, scene_seed=12, temperature=1.0, beam_width=2),)
    summary = build_demo_model(tmp_path / "demo", steps_per_phase=2, phases=phases, judge_sets=judge_sets, batch_size=4)
    recorded = json.loads((tmp_path / "demo" / "training.json").read_text())
    assert recorded == summary
    assert [(p["lr"], p["steps"]) for p in recorded["phases"]] == [(1e-3, 2), (5e-4, 2)]
    assert [p["data"] for p in recorded["phases"]] == [
        "llava-o1 synth-data --n 8 --seed 0 --test-fraction 0",
        "llava-o1 synth-data --n 8 --seed 7 --test-fraction 0",
    ]
    assert recorded["phases"][1]["sources"] == ["answers", "counterfactual:CONCLUSION", "judge"]
    assert [p["loss_average"] for p in recorded["phases"]] == ["token", "example"]
    assert recorded["judge_sets"] == [
        "llava-o1 judge-data --model MODEL --out OUT --n 4 --scene-seed 12 --beam-width 2 --temperature 1.0 "
        "--stage-prompt never"
    ]
    assert {"model.safetensors", "tokenizer.json", "processor_config.json"} <= {
        p.name for p in (tmp_path / "demo").iterdir()
    }
