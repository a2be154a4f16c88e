"""deploy/: the compose file and the Kubernetes manifest agree with the server they run."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def container() -> tuple[dict, dict]:
    deployment = next(
        d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if d["kind"] == "Deployment"
    )
    pod = deployment["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def serve_settings(args: list[str]):
    from server.serve import build_parser, settings_from

    return settings_from(build_parser().parse_args(args))


def test_the_kubernetes_probes_answer_on_a_real_server(server):
    _, spec = container()
    for probe, status in (("readinessProbe", 200), ("livenessProbe", 200), ("startupProbe", 200)):
        path = spec[probe]["httpGet"]["path"]
        assert httpx.get(server["base"] + path, timeout=5).status_code == status, probe


def test_the_kubernetes_grace_period_covers_the_drain():
    pod, spec = container()
    settings = serve_settings(spec["args"])
    pause = spec["lifecycle"]["preStop"]["sleep"]["seconds"]
    # The drain, then the engine's shutdown (about 10 s on vLLM).
    assert pod["terminationGracePeriodSeconds"] >= pause + settings.shutdown_timeout_s + 10


def test_compose_restarts_the_server_and_waits_for_its_drain():
    service = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["llava-o1"]
    assert service["restart"] in ("always", "unless-stopped", "on-failure")
    settings = serve_settings(service["command"])
    assert int(service["stop_grace_period"].removesuffix("s")) >= settings.shutdown_timeout_s + 10
