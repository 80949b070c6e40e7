"""infra/compose and infra/k8s, checked without Docker or a cluster (none runs here)."""

from __future__ import annotations

import json
import re

import yaml

from tests.helpers import ROOT

COMPOSE = ROOT / "infra/compose/docker-compose.yml"
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(:?[-?][^}]*)?\}")
SECRETS = {"POSTGRES_PASSWORD", "FLOWTUNE_S3_ACCESS_KEY_ID", "FLOWTUNE_S3_SECRET_ACCESS_KEY"}


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_the_services_and_their_dependencies_exist() -> None:
    services = compose()["services"]
    assert {"postgres", "prefect-server", "s3", "bucket-init", "worker"} <= set(services)
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on undefined {dependency}"
            assert condition["condition"] in {"service_healthy", "service_completed_successfully"}
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s missing healthcheck"


def test_long_running_services_have_health_checks_and_the_init_job_runs_once() -> None:
    services = compose()["services"]
    for name, service in services.items():
        if name == "bucket-init":
            assert service["restart"] == "no"
        else:
            assert "healthcheck" in service and service["restart"] == "unless-stopped", name
    assert services["worker"]["depends_on"]["bucket-init"]["condition"] == "service_completed_successfully"


def test_named_volumes_are_declared() -> None:
    document = compose()
    used = {volume.split(":")[0] for service in document["services"].values() for volume in service.get("volumes", [])
            if not volume.startswith((".", "/"))}
    assert used and used <= set(document["volumes"])


def test_secrets_are_required_and_every_variable_is_documented() -> None:
    text = COMPOSE.read_text()
    uses = VARIABLE.findall(text)
    for name, modifier in uses:
        if name in SECRETS:
            assert modifier.startswith(":?"), f"{name} must fail fast when unset, not default"
    documented = {line.split("=")[0] for line in (ROOT / "infra/compose/.env.example").read_text().splitlines()
                  if "=" in line and not line.startswith("#")}
    assert {name for name, _ in uses} <= documented
    assert all(not line.split("=", 1)[1] for line in (ROOT / "infra/compose/.env.example").read_text().splitlines()
               if line.split("=")[0] in SECRETS)  # the example holds no secret values


def test_k8s_job_template_declares_every_placeholder_and_requests_a_gpu() -> None:
    template = json.loads((ROOT / "infra/k8s/train-gpu-job-template.json").read_text())
    placeholders = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(template["job_configuration"])))
    assert placeholders <= set(template["variables"]["properties"])
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    assert container["envFrom"] == [{"secretRef": {"name": "{{ credentials_secret }}"}}]
    assert "FLOWTUNE_S3_SECRET_ACCESS_KEY" not in json.dumps(template)  # credentials come from the Secret only


def test_k8s_worker_manifests_are_consistent() -> None:
    documents = list(yaml.safe_load_all((ROOT / "infra/k8s/worker.yaml").read_text()))
    by_kind = {}
    for document in documents:
        assert document["metadata"]["namespace"] == "flowtune"
        by_kind.setdefault(document["kind"], []).append(document)
    deployment = by_kind["Deployment"][0]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    accounts = {a["metadata"]["name"] for a in by_kind["ServiceAccount"]}
    assert pod["spec"]["serviceAccountName"] in accounts
    binding = by_kind["RoleBinding"][0]
    assert binding["roleRef"]["name"] == by_kind["Role"][0]["metadata"]["name"]
    assert {s["name"] for s in binding["subjects"]} <= accounts
    verbs = {verb for rule in by_kind["Role"][0]["rules"] if "jobs" in rule["resources"] for verb in rule["verbs"]}
    assert {"create", "get", "watch"} <= verbs
    config = {c["configMapRef"]["name"] for c in pod["spec"]["containers"][0]["envFrom"]}
    assert config <= {m["metadata"]["name"] for m in by_kind["ConfigMap"]}
