"""`llava-o1 soak`: a long mixed load against a running server on loopback, then what went wrong.

Clients (twice the server's admission limit, by default) loop until the time is up, each request
drawn from a fixed mix: plain and streaming answers, streams the client abandons after the first
chunk, plain requests it abandons before the answer, seeded requests, `beam_width: "auto"`, and bad
input. Then the report:
- 5xx seen by clients, and the server's own `server_error` count;
- engine deaths: /health not 200 during the run, or the engine core process replaced;
- memory: the resident set of the server and its engine processes at the start, after warm-up and
  at the end;
- engine requests left running once the load stops;
- whether the server's request counters (`llava_o1_requests_total` by outcome) agree with what the
  clients saw.
It exits 1 when a check fails. `tests/test_soak.py` runs a short form in CI; docs/operations.md
has the ten-minute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.load import synthetic_questions
from server.bearer import auth_headers

CHAT = "/v1/chat/completions"
# The mix: kind -> weight.
MIX = {"plain": 30, "stream": 25, "stream_hangup": 10, "plain_hangup": 5, "auto": 15, "bad": 15}
SEEDED_EVERY = 4  # one normal request in this many carries a seed
RSS_GROWTH_LIMIT = 0.10  # after warm-up; judged on runs of five minutes or more (shorter ones are noise)


@dataclass
class Observed:
    """What the clients saw."""

    outcomes: Counter = field(default_factory=Counter)  # success, hung_up, rejected, client_error, server_error
    statuses: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # 5xx and transport errors, with what was sent
    unhealthy_polls: int = 0
    # Plain requests the client gave up on before any answer: on a busy server some of them are
    # dropped before the app reads them, so the server's counters never see them.
    gave_up: int = 0


def bad_bodies(model: str, image_url: str) -> list[tuple[str, dict | bytes]]:
    def chat(**changes) -> dict:
        question = [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": "How many?"}]
        return {"model": model, "messages": [{"role": "user", "content": question}], **changes}

    not_an_image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}
    return [
        ("malformed_json", b'{"model": "x", "messages": [}'),
        ("wrong_model", chat(model="gpt-4o")),
        ("bad_temperature", chat(temperature=7)),
        ("beam_width_zero", chat(reasoning={"beam_width": 0})),
        ("unsupported_field", chat(tools=[{"type": "function"}])),
        ("not_an_image", chat(messages=[{"role": "user", "content": [not_an_image, {"type": "text", "text": "q"}]}])),
        ("prompt_too_long", chat(messages=[{"role": "user", "content": "word " * 6000}])),
        ("no_user_message", chat(messages=[{"role": "system", "content": "hi"}])),
    ]


class Soak:
    def __init__(self, args: argparse.Namespace, model: str):
        self.args = args
        self.model = model
        self.questions = synthetic_questions(64, seed=args.seed)
        self.bad = bad_bodies(model, self.questions[0][0])
        self.seen = Observed()

    def body(self, rng: random.Random, kind: str, index: int) -> dict:
        image_url, question = rng.choice(self.questions)
        content = [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": question}]
        beam: int | str = "auto" if kind == "auto" else rng.choice([1, 2, 4])
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "reasoning": {"beam_width": beam, "strategy": rng.choice(["stage", "stage", "best_of_n", "sentence"])},
            "stream": kind.startswith("stream"),
        }
        if index % SEEDED_EVERY == 0:
            body["seed"] = rng.randrange(1 << 31)
        return body

    async def client(self, http: httpx.AsyncClient, number: int, deadline: float) -> None:
        rng = random.Random(self.args.seed * 1000 + number)
        kinds, weights = zip(*MIX.items(), strict=True)
        index = 0
        while time.monotonic() < deadline:
            kind = rng.choices(kinds, weights)[0]
            index += 1
            self.seen.kinds[kind] += 1
            try:
                outcome, status = await self.request(http, rng, kind, index)
            except httpx.HTTPError as exc:
                outcome, status = "transport_error", 0
                self.seen.problems.append(f"{kind}: {exc!r}")
            self.seen.outcomes[outcome] += 1
            self.seen.statuses[status] += 1

    async def request(self, http: httpx.AsyncClient, rng: random.Random, kind: str, index: int) -> tuple[str, int]:
        if kind == "bad":
            name, bad = rng.choice(self.bad)
            sent = {"content": bad} if isinstance(bad, bytes) else {"json": bad}
            response = await http.post(CHAT, headers={"Content-Type": "application/json"}, **sent)
            return self.judge(response.status_code, response.text, name), response.status_code
        body = self.body(rng, kind, index)
        if kind == "plain_hangup":
            try:
                response = await http.post(CHAT, json=body, timeout=rng.uniform(0.2, 1.0))
            except httpx.TimeoutException:
                self.seen.gave_up += 1
                return "hung_up", 0
            return self.judge(response.status_code, response.text, kind), response.status_code
        if not body["stream"]:
            response = await http.post(CHAT, json=body)
            return self.judge(response.status_code, response.text, kind), response.status_code
        async with http.stream("POST", CHAT, json=body) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                return self.judge(response.status_code, text, kind), response.status_code
            lines = []
            async for line in response.aiter_lines():
                if not line:
                    continue
                lines.append(line)
                if kind == "stream_hangup" and len(lines) >= 2:
                    return "hung_up", 200  # leaving the block closes the connection mid-stream
        errors = [line for line in lines if line.startswith('data: {"error"')]
        if lines[-1:] != ["data: [DONE]"] or errors:
            self.seen.problems.append(f"{kind}: stream ended badly: {lines[-2:]!r}")
            return "server_error", 200
        return "success", 200

    def judge(self, status: int, text: str, what: str) -> str:
        if status >= 500:
            self.seen.problems.append(f"{what}: {status} {text[:300]}")
            return "server_error"
        if status == 429:
            return "rejected"
        return "client_error" if status >= 400 else "success"

    async def watch_health(self, http: httpx.AsyncClient, until: asyncio.Event) -> None:
        while not until.is_set():
            try:
                healthy = (await http.get("/health", timeout=5)).status_code == 200
            except httpx.HTTPError:
                healthy = False
            self.seen.unhealthy_polls += not healthy
            await asyncio.sleep(1.0)


def requests_by_outcome(metrics_text: str) -> Counter:
    counts: Counter = Counter()
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "llava_o1_requests":
            for sample in family.samples:
                if sample.name == "llava_o1_requests_total":
                    counts[sample.labels["outcome"]] += int(sample.value)
    return counts


def process_tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (the server and its vLLM processes)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, StopIteration):
            continue
        pending += [int(child) for child in children]
    return total


def engine_processes(pid: int) -> set[int]:
    """The vLLM engine core processes under the server (their replacement would be a death)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return set()
    return {int(c) for c in children if "EngineCor" in Path(f"/proc/{c}/comm").read_text(errors="replace")}


async def run(args: argparse.Namespace) -> dict:
    limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients + 4)
    async with httpx.AsyncClient(
        base_url=args.url, timeout=args.request_timeout, limits=limits, headers=auth_headers(args.api_key)
    ) as http:
        model = (await http.get("/v1/models")).json()["data"][0]["id"]
        soak = Soak(args, model)
        before = requests_by_outcome((await http.get("/metrics")).text)
        pid = args.server_pid
        rss_start = process_tree_rss(pid) if pid else None
        engines_start = engine_processes(pid) if pid else set()
        started = time.monotonic()
        deadline = started + args.duration
        done = asyncio.Event()
        health = asyncio.create_task(soak.watch_health(http, done))
        clients = [asyncio.create_task(soak.client(http, n, deadline)) for n in range(args.clients)]
        await asyncio.sleep(min(args.warmup, args.duration))
        rss_warm = process_tree_rss(pid) if pid else None
        await asyncio.gather(*clients)
        done.set()
        await health
        # Abandoned requests end on the server a moment after the client leaves.
        left = {}
        for _ in range(40):
            load = (await http.get("/health")).json()
            left = {"running": load.get("running_requests", 0), "waiting": load.get("waiting_requests", 0)}
            if not any(left.values()):
                break
            await asyncio.sleep(0.25)
        await asyncio.sleep(0.5)  # the last requests' metrics are recorded as their responses end
        after = requests_by_outcome((await http.get("/metrics")).text)
        rss_end = process_tree_rss(pid) if pid else None
        engines_end = engine_processes(pid) if pid else set()
    server = after - before
    seen = soak.seen
    sent = sum(seen.outcomes.values())
    answered_or_abandoned = seen.outcomes["success"] + seen.outcomes["hung_up"]
    checks = {
        "no 5xx": seen.outcomes["server_error"] == 0 and server["server_error"] == 0 and server["timeout"] == 0,
        "no transport errors": seen.outcomes["transport_error"] == 0,
        "no engine deaths": seen.unhealthy_polls == 0 and engines_start == engines_end,
        "no engine requests left running": not any(left.values()),
        "counters agree: requests": 0 <= sent - sum(server.values()) <= seen.gave_up,
        "counters agree: rejected": server["rejected"] == seen.outcomes["rejected"],
        "counters agree: client errors": server["client_error"] == seen.outcomes["client_error"],
        # An abandoned request the server had already answered counts as a success there.
        "counters agree: answered or abandoned": (
            0 <= answered_or_abandoned - (server["success"] + server["cancelled"]) <= seen.gave_up
            and server["success"] >= seen.outcomes["success"]
        ),
        "the load overflowed admission (429s)": seen.outcomes["rejected"] > 0,
    }
    growth = (rss_end / rss_warm - 1) if rss_end and rss_warm else None
    if growth is not None and args.duration >= 300:
        checks[f"RSS growth after warm-up under {RSS_GROWTH_LIMIT:.0%}"] = growth < RSS_GROWTH_LIMIT
    return {
        "duration_s": round(time.monotonic() - started, 1),
        "clients": args.clients,
        "requests": sent,
        "kinds": dict(seen.kinds),
        "client_outcomes": dict(seen.outcomes),
        "client_gave_up_before_an_answer": seen.gave_up,
        "client_statuses": {str(k): v for k, v in sorted(seen.statuses.items())},
        "server_outcomes": dict(server),
        "unhealthy_health_polls": seen.unhealthy_polls,
        "engine_processes": {"start": sorted(engines_start), "end": sorted(engines_end)},
        "left_running": left,
        "rss_mib": {
            "start": _mib(rss_start),
            "after_warmup": _mib(rss_warm),
            "end": _mib(rss_end),
            "growth_after_warmup": None if growth is None else round(growth, 4),
        },
        "problems": seen.problems[:20],
        "checks": checks,
        "passed": all(checks.values()),
    }


def _mib(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-o1 soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server (loopback)")
    parser.add_argument("--server-pid", type=int, help="the server's process id, for memory and engine deaths")
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    parser.add_argument("--warmup", type=float, default=60, help="seconds before the reference RSS reading")
    parser.add_argument(
        "--clients", type=int, default=8, help="concurrent clients; twice the admission limit (running + queued)"
    )
    parser.add_argument("--request-timeout", type=float, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key", default=os.environ.get("LLAVA_O1_API_KEY"), help="default: $LLAVA_O1_API_KEY")
    parser.add_argument("--json-out", type=Path, help="also write the report here")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    report = asyncio.run(run(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    for name, ok in report["checks"].items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}", file=sys.stderr)
    return 0 if report["passed"] else 1
