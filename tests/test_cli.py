"""The `llava-o1` command and its subcommands, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import shapes_image
from transformers import AutoModelForImageTextToText, AutoProcessor


def run(args, env, timeout=120):
    return subprocess.run(["llava-o1", *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_help_lists_the_commands(cli_env):
    done = run(["--help"], cli_env)
    assert done.returncode == 0
    assert "serve" in done.stdout and "tiny-model" in done.stdout
    assert run(["frobnicate"], cli_env).returncode == 2


def test_tiny_model_command_builds_a_loadable_model(cli_env, tmp_path):
    done = run(["tiny-model", str(tmp_path / "m")], cli_env)
    assert done.returncode == 0, done.stderr
    processor = AutoProcessor.from_pretrained(tmp_path / "m")
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "m")
    assert processor.chat_template and model.config.model_type == "idefics3"


def test_ask_refuses_a_file_that_is_not_an_image(cli_env, tmp_path):
    bad = tmp_path / "not.png"
    bad.write_text("hello")
    done = run(["ask", "--image", str(bad), "--question", "How many?"], cli_env)
    assert done.returncode == 2
    assert "cannot read image" in done.stderr


def test_bench_runs_all_modes_and_writes_results_and_a_plot(cli_env, tmp_path):
    out = tmp_path / "bench"
    done = run(
        [
            "bench",
            "--modes",
            "ours,reference,raw",
            "--concurrency",
            "1,2",
            "--beam-width",
            "2",
            "--requests",
            "3",
            "--rounds",
            "2",
            "--reference-requests",
            "1",
            "--max-tokens-per-stage",
            "6",
            "--out",
            str(out),
        ],
        cli_env,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| ours |" in done.stdout and "| reference |" in done.stdout and "| raw |" in done.stdout
    assert "ours c=2 round 2/2: 3/3 requests" in done.stderr  # progress
    results = json.loads((out / "results.json").read_text())
    for mode in ("ours", "reference", "raw"):
        figures = results["modes"][mode]
        for key in ("requests_per_second", "candidate_tokens_per_second", "latency_p50_s", "latency_p99_s"):
            assert figures[key] is not None and figures[key] >= 0, (mode, key)
        assert figures["failures"] == 0
    assert [level["concurrency"] for level in results["modes"]["ours"]["by_concurrency"]] == [1, 2]
    for mode in ("ours", "raw"):  # two rounds of 3 requests per level, pooled
        assert [level["requests"] for level in results["modes"][mode]["by_concurrency"]] == [6, 6]
        assert all(len(level["rounds_requests_per_second"]) == 2 for level in results["modes"][mode]["by_concurrency"])
    assert results["modes"]["raw"]["candidate_tokens_per_request"] > 0
    assert set(results["ratios"]) == {"ours_vs_reference", "ours_vs_raw"}
    by_round = results["ratios_by_round"]["ours_vs_raw"]  # one ratio per round, ours and raw paired
    ours_rounds = results["modes"]["ours"]["rounds_requests_per_second"]
    raw_rounds = results["modes"]["raw"]["rounds_requests_per_second"]
    assert by_round == pytest.approx([o / r for o, r in zip(ours_rounds, raw_rounds, strict=True)])
    assert "ours vs raw: " in done.stdout and "(by round: " in done.stdout
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Without --model the benchmark runs the random tiny model, built into the cache on first use.
    assert results["settings"]["model"] == "llava-o1-tiny"
    assert (Path(cli_env["LLAVA_O1_CACHE"]) / "tiny-idefics3" / "config.json").exists()


def test_vllm_per_weight_warnings_are_quiet_unless_verbose(cli_env, tiny_model_dir, tmp_path):
    image = tmp_path / "shapes.png"
    shapes_image().save(image)
    # A float32 checkpoint run in bfloat16: vLLM warns once per weight while loading it.
    args = [
        "ask",
        "--model",
        str(tiny_model_dir),
        "--dtype",
        "bfloat16",
        "--image",
        str(image),
        "--question",
        "How many?",
        "--strategy",
        "none",
        "--max-tokens-per-stage",
        "2",
    ]
    # Side by side: most of each run is vLLM starting up.
    with ThreadPoolExecutor(2) as pool:
        quiet, verbose = pool.map(lambda a: run(a, cli_env, timeout=300), [args, [*args, "-v"]])
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr[-3000:] + verbose.stderr[-3000:]
    assert "Attempted to load weight" in verbose.stderr  # the load does warn ...
    assert "Attempted to load weight" not in quiet.stderr + quiet.stdout  # ... and by default it is quiet


def test_every_command_help_lists_its_own_options_first(cli_env):
    own = {"bench": "--modes", "eval": "--data", "ask": "--question", "serve": "--max-concurrent-searches"}
    with ThreadPoolExecutor(2) as pool:  # each imports vLLM for its flags
        helps = dict(zip(own, pool.map(lambda command: run([command, "--help"], cli_env), own), strict=True))
    for command, option in own.items():
        done = helps[command]
        assert done.returncode == 0, done.stderr[-2000:]
        assert option in done.stdout
        assert ("-v, --verbose" in done.stdout) == (command != "serve")
        assert done.stdout.index(option) < done.stdout.index("engine options ("), command
