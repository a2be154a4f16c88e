"""deploy/gpu_check.py, in its CPU form (tiny Mllama): the script lent GPU machines run must not rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_on_the_cpu_with_the_tiny_config(tmp_path):
    out = tmp_path / "gpu-check.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "deploy" / "gpu_check.py"),
            "--size",
            "tiny",
            "--requests",
            "3",
            "--max-tokens-per-stage",
            "6",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["size"] == "tiny" and result["dtype"] == "float32"
    for run in ("stage_search", "plain_generate"):
        assert result[run]["requests"] == 3 and result[run]["requests_per_second"] > 0
    # Plain sampling was given the stage search's candidate tokens per request.
    assert (
        abs(
            result["plain_generate"]["candidate_tokens_per_request"]
            - result["stage_search"]["candidate_tokens_per_request"]
        )
        <= 4
    )
