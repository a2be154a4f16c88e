"""Fuzzing the HTTP API with schemathesis, from the server's own /openapi.json, against a real server.

Pass: no 5xx, every 4xx in the OpenAI error shape, and a healthy server afterwards. The chat
operation gets FUZZ_CASES cases (300 here; `make fuzz` runs 3,000), half inside the published schema
(they reach the search) and half outside it (they must be refused cleanly).
"""

from __future__ import annotations

import collections
import os

import httpx
import schemathesis
from helpers import API_KEY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

CHAT = "/v1/chat/completions"
FUZZ_CASES = int(os.environ.get("FUZZ_CASES", "300"))
ERROR_KEYS = {"message", "type", "param", "code"}


def problem_with(case, status: int, body: bytes) -> str | None:
    """What is wrong with one answer, or None."""
    if status >= 500:
        reasoning = case.body.get("reasoning") if isinstance(case.body, dict) else None
        # A deadline the client set itself (reasoning.timeout) may pass: that 504 is the client's choice.
        if status == 504 and isinstance(reasoning, dict) and reasoning.get("timeout") is not None:
            return None
        return f"{status}: {body[:300]!r}"
    if 400 <= status < 500:
        try:
            error = httpx.Response(status, content=body).json()["error"]
        except (ValueError, KeyError, TypeError):
            return f"{status} not in the OpenAI error shape: {body[:300]!r}"
        if not isinstance(error, dict) or set(error) != ERROR_KEYS or not error["message"]:
            return f"{status} not in the OpenAI error shape: {body[:300]!r}"
    return None


def fuzz(base: str, path: str, method: str, cases: int) -> collections.Counter:
    """Send `cases` generated requests to one operation; fail on the first bad answer."""
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    operation = schema[path][method]
    statuses: collections.Counter = collections.Counter()
    problems: list[str] = []

    @given(
        case=st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    )
    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def send(case):
        response = case.call(base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=180)
        statuses[response.status_code] += 1
        problem = problem_with(case, response.status_code, response.content)
        if problem is not None:
            problems.append(f"{method} {path} {case.body!r:.500}: {problem}")
        assert problem is None, problems[-1]

    send()
    return statuses


def test_fuzzing_the_chat_operation_finds_no_5xx_and_only_openai_shaped_4xx(guarded_server):
    base = guarded_server["base"]
    statuses = fuzz(base, CHAT, "POST", FUZZ_CASES)
    print(f"{CHAT}: {sum(statuses.values())} cases, statuses {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) >= FUZZ_CASES * 0.9  # hypothesis may stop early on duplicates
    # The published schema leads the fuzzer into the search, not just into validation.
    assert statuses[200] >= FUZZ_CASES * 0.1, statuses
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200


def test_fuzzing_the_other_operations(guarded_server):
    base = guarded_server["base"]
    paths = httpx.get(f"{base}/openapi.json", timeout=10).json()["paths"]
    for path, methods in paths.items():
        for method in methods:
            if path != CHAT:
                fuzz(base, path, method.upper(), 20)
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200
