"""The soak command's short form, against the guarded server: every check of the long run, for a minute."""

from __future__ import annotations

import json
import subprocess

from helpers import API_KEY, GUARDED_LIMITS


def test_a_short_soak_at_twice_the_admission_limit_passes_every_check(guarded_server, cli_env):
    clients = 2 * (GUARDED_LIMITS["max_concurrent_searches"] + GUARDED_LIMITS["max_queue"])
    target = ["--url", guarded_server["base"], "--server-pid", str(guarded_server["process"].pid)]
    done = subprocess.run(
        ["llava-o1", "soak", *target, "--duration", "45", "--warmup", "10", "--clients", str(clients)],
        env={**cli_env, "LLAVA_O1_API_KEY": API_KEY},
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["passed"], (report["checks"], report["problems"], done.stderr[-2000:])
    kinds = report["kinds"]
    assert all(kinds.get(kind, 0) > 0 for kind in ("plain", "stream", "stream_hangup", "auto", "bad")), kinds
    assert report["client_outcomes"].get("success", 0) > 0
    assert report["rss_mib"]["start"] > 0 and report["engine_processes"]["start"]
