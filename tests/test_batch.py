"""`llava-o1 run-batch`: OpenAI batch files, against the session's server (--url) and in process;
bad lines become error lines, a rerun asks nothing twice, a killed run resumes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
from helpers import API_KEY, MODEL, chat_body, run_cli, wait_for

from bench.soak import requests_by_outcome


def request_line(custom_id: str, **changes) -> str:
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": chat_body(**changes)}
    )


def answered(output: Path) -> dict[str | None, dict]:
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    by_id = {line["custom_id"] or f"line-{line['line']}": line for line in lines}
    assert len(by_id) == len(lines), "a request was answered twice"
    return by_id


def chat_requests_served(server) -> int:
    return sum(requests_by_outcome(httpx.get(server["base"] + "/metrics").text).values())


def batch_file(path: Path, count: int) -> Path:
    lines = [request_line(f"q{i}", seed=i) for i in range(count)]
    lines += [
        request_line("bad-temperature", temperature=7),  # answered: the server's 400
        "{not json",
        request_line("q0"),  # a repeated custom_id
        json.dumps({"custom_id": "other-url", "method": "POST", "url": "/v1/embeddings", "body": {}}),
        "",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_run_batch_against_a_server_answers_every_line_and_resumes_without_asking_again(server, cli_env, tmp_path):
    requests, output = batch_file(tmp_path / "in.jsonl", 6), tmp_path / "out.jsonl"
    args = ["run-batch", "-i", str(requests), "-o", str(output), "--url", server["base"], "--api-key", API_KEY]
    before = chat_requests_served(server)
    done = run_cli(cli_env, *args, "--concurrency", "3")
    assert "7 answered (1 with an error status), 3 bad lines" in done.stderr
    assert chat_requests_served(server) - before == 7

    lines = answered(output)
    for i in range(6):
        response = lines[f"q{i}"]["response"]
        assert response["status_code"] == 200 and lines[f"q{i}"]["error"] is None
        assert response["body"]["object"] == "chat.completion" and response["body"]["model"] == MODEL
        assert response["request_id"] == response["body"]["id"]
    assert lines["bad-temperature"]["response"]["status_code"] == 400
    assert lines["bad-temperature"]["response"]["body"]["error"]["param"] == "temperature"
    assert lines["line-8"]["error"]["code"] == "invalid_line" and "not JSON" in lines["line-8"]["error"]["message"]
    assert "more than once" in lines["line-9"]["error"]["message"]
    assert lines["other-url"]["response"] is None and "/v1/chat/completions" in lines["other-url"]["error"]["message"]

    # Everything is in the output: a rerun asks the server nothing and writes nothing.
    size, before = output.stat().st_size, chat_requests_served(server)
    again = run_cli(cli_env, *args)
    assert "0 answered" in again.stderr and chat_requests_served(server) == before
    assert output.stat().st_size == size


def test_a_killed_run_resumes_where_it_stopped(server, cli_env, tmp_path):
    requests, output = batch_file(tmp_path / "in.jsonl", 8), tmp_path / "out.jsonl"
    args = ["run-batch", "-i", str(requests), "-o", str(output), "--url", server["base"], "--api-key", API_KEY]
    # Stopped midway: a few answers written, the last one cut off mid-line.
    run = subprocess.Popen(["llava-o1", *args, "--concurrency", "1"], env=cli_env, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: output.exists() and output.read_text().count("\n") >= 3, timeout=120)
    finally:
        run.kill()
        run.wait()
    kept = output.read_text().splitlines(keepends=True)[:3]
    output.write_text("".join(kept) + kept[-1][:20])
    before = chat_requests_served(server)
    run_cli(cli_env, *args)
    lines = answered(output)
    assert {f"q{i}" for i in range(8)} <= set(lines)
    assert all(lines[f"q{i}"]["response"]["status_code"] == 200 for i in range(8))
    # Only what was missing was asked: 8 questions and the bad-temperature one, less those kept.
    kept_requests = sum(1 for line in kept if json.loads(line)["response"] is not None)
    assert chat_requests_served(server) - before == 9 - kept_requests


def test_run_batch_in_process(cli_env, tiny_model_dir, tmp_path):
    requests = tmp_path / "in.jsonl"
    requests.write_text("\n".join(request_line(f"q{i}", seed=i) for i in range(3)) + "\n")
    output = tmp_path / "out.jsonl"
    engine = ["--model", str(tiny_model_dir), "--served-model-name", MODEL, "--max-model-len", "4096"]
    run_cli(cli_env, "run-batch", "-i", str(requests), "-o", str(output), *engine, timeout=600)
    lines = answered(output)
    assert set(lines) == {"q0", "q1", "q2"}
    assert all(line["response"]["status_code"] == 200 for line in lines.values())
