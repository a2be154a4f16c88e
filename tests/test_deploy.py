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
    # Liveness must not be readiness: /health is 503 while the server drains, and a liveness probe
    # on it would restart a pod in the middle of its drain.
    paths = {probe: spec[probe]["httpGet"]["path"] for probe in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert paths["readinessProbe"] == "/health" and paths["livenessProbe"] == "/live", paths
    for probe, path in paths.items():
        response = httpx.get(server["base"] + path, timeout=5)
        assert response.status_code == 200 and response.json()["status"] == "ok", (probe, response.text)


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


# The Kubernetes release the manifests are checked against (kubernetes-validate's offline schemas).
KUBERNETES_VERSION = "1.33.0"
FLEET = DEPLOY / "kubernetes" / "fleet"
# Custom resources: no schema in Kubernetes itself; checked for the fields their operator needs.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"): ("selector", "endpoints")}


def manifests() -> list[tuple[str, dict]]:
    files = [DEPLOY / "kubernetes.yaml", *sorted(FLEET.glob("*.yaml"))]
    return [
        (f"{path.name}/{doc['kind']}/{doc['metadata']['name']}", doc)
        for path in files
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def fleet_docs(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in manifests() if doc["kind"] == kind}


def test_every_manifest_is_valid_for_a_pinned_kubernetes():
    import kubernetes_validate

    checked = []
    for name, doc in manifests():
        required = CUSTOM_KINDS.get((doc["apiVersion"], doc["kind"]))
        if required is not None:
            assert all(field in doc["spec"] for field in required), name
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises on any error
        checked.append(name)
    kinds = {name.split("/")[1] for name in checked}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Role"} <= kinds


def test_the_kustomization_lists_every_fleet_manifest():
    listed = yaml.safe_load((FLEET / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in FLEET.glob("*.yaml") if p.name != "kustomization.yaml")


def test_the_fleet_front_end_runs_the_remote_engine_through_the_router():
    from server.serve import build_parser

    deployments = fleet_docs("Deployment")
    front_end = deployments["llava-o1"]["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(front_end["args"])
    router_service = fleet_docs("Service")["vllm-router"]
    assert (args.engine, args.engine_url) == (
        "remote",
        f"http://vllm-router:{router_service['spec']['ports'][0]['port']}",
    )
    # It sends priorities, so the engines must schedule by them.
    engine = deployments["vllm-engine"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args.engine_priority and engine[engine.index("--scheduling-policy") + 1] == "priority"
    assert "--enable-prefix-caching" in engine and "--enable-prompt-tokens-details" in engine
    # The router hashes on the header the front end sends, and finds the engines by their label.
    router = deployments["vllm-router"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert router[router.index("--policy") + 1] == "consistent_hash" and args.session_header == "X-Session-ID"
    engine_labels = deployments["vllm-engine"]["spec"]["template"]["metadata"]["labels"]
    key, value = router[router.index("--selector") + 1].split("=")
    assert engine_labels[key] == value


def test_the_autoscalers_scale_front_ends_on_searches_and_engines_on_their_queue():
    scalers = fleet_docs("HorizontalPodAutoscaler")
    front_end = scalers["llava-o1"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    engine = scalers["vllm-engine"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert front_end == "llava_o1_requests_in_flight" and engine == "vllm_num_requests_waiting"


def test_the_fleet_compose_file_wires_front_end_router_and_engines():
    services = yaml.safe_load((DEPLOY / "fleet" / "compose.yaml").read_text())["services"]
    settings = serve_settings(services["llava-o1"]["command"])
    assert int(services["llava-o1"]["stop_grace_period"].removesuffix("s")) >= settings.shutdown_timeout_s + 10
    router = services["router"]["command"]
    engines = [name for name in services if name.startswith("engine-")]
    assert len(engines) >= 2 and all(f"http://{name}:8000" in router for name in engines)
    assert router[router.index("--policy") + 1] == "consistent_hash"
    front_end = services["llava-o1"]["command"]
    assert front_end[front_end.index("--engine-url") + 1] == "http://router:8000"
    scraped = yaml.safe_load((DEPLOY / "fleet" / "prometheus.yml").read_text())["scrape_configs"]
    targets = {t for job in scraped for group in job["static_configs"] for t in group["targets"]}
    assert {"llava-o1:8000", *(f"{name}:8000" for name in engines)} <= targets
