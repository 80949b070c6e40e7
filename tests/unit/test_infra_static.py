"""infra/compose and infra/k8s, checked without Docker or a cluster (none runs here)."""

from __future__ import annotations

import json
import re

import yaml

from tests.helpers import ROOT

COMPOSE = ROOT / "infra/compose/docker-compose.yml"
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(:?[-?][^}]*)?\}")
SECRETS = {"POSTGRES_PASSWORD", "S3_ROOT_ACCESS_KEY_ID", "S3_ROOT_SECRET_ACCESS_KEY", "FLOWTUNE_S3_ACCESS_KEY_ID",
           "FLOWTUNE_S3_SECRET_ACCESS_KEY", "PREFECT_API_AUTH_STRING", "FLOWTUNE_SERVE_S3_ACCESS_KEY_ID",
           "FLOWTUNE_SERVE_S3_SECRET_ACCESS_KEY", "FLOWTUNE_SERVE_TOKEN"}
BUCKETS = ("flowtune-dvc", "flowtune-registry", "flowtune-reports", "flowtune-capture")


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
            if not volume.startswith((".", "/", "${"))}  # bind mounts: paths, or a path variable
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


def with_defaults(text: str) -> str:
    """`text` as compose reads it with no variable set: `${NAME:-default}` becomes `default`."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", text)


def test_every_port_is_published_on_loopback_by_default() -> None:
    published = [(name, port) for name, service in compose()["services"].items()
                 for port in service.get("ports", [])]
    assert published, "no port published: the test would prove nothing"
    for name, port in published:
        assert with_defaults(str(port)).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"


def identities(monkeypatch) -> dict[str, set[str]]:
    """infra/compose/s3_setup.py's SeaweedFS identities (as the s3 container writes them): name -> actions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("s3_setup", ROOT / "infra/compose/s3_setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for prefix in ("S3_ROOT", "FLOWTUNE_S3", "FLOWTUNE_SERVE_S3"):
        monkeypatch.setenv(f"{prefix}_ACCESS_KEY_ID", f"{prefix.lower()}-id")
        monkeypatch.setenv(f"{prefix}_SECRET_ACCESS_KEY", f"{prefix.lower()}-secret")
    document = module.identities()
    keys = {identity["name"]: [c["accessKey"] for c in identity.get("credentials", [])]
            for identity in document["identities"]}
    assert keys == {"root": ["s3_root-id"], "worker": ["flowtune_s3-id"], "serve": ["flowtune_serve_s3-id"],
                    "anonymous": []}
    return {identity["name"]: set(identity["actions"]) for identity in document["identities"]}


def test_the_s3_service_loads_the_identities_of_s3_setup_and_binds_only_the_gateway_beyond_loopback() -> None:
    command = " ".join(compose()["services"]["s3"]["command"])
    assert "s3_setup.py identities > /tmp/s3.json" in command and "-s3.config=/tmp/s3.json" in command
    # master, volume and filer take no credentials: no other container may reach them
    assert "-ip.bind=127.0.0.1" in command and "-s3.ip.bind=0.0.0.0" in command


def test_anonymous_readers_may_only_get_report_objects(monkeypatch) -> None:
    """No listing (List), no writes, no other bucket: only Read of single objects in the reports bucket."""
    assert identities(monkeypatch)["anonymous"] == {"Read:flowtune-reports"}


def test_the_worker_has_keys_limited_to_the_four_buckets_not_the_root_keys(monkeypatch) -> None:
    services = compose()["services"]
    root = {"S3_ROOT_ACCESS_KEY_ID", "S3_ROOT_SECRET_ACCESS_KEY"}
    for name, service in services.items():
        variables = {name for name, _ in VARIABLE.findall(" ".join(map(str, service.get("environment", {}).values())))}
        assert not variables & root or name in {"s3", "bucket-init"}, f"{name} gets the root keys"
    worker = {name for name, _ in VARIABLE.findall(" ".join(map(str, services["worker"]["environment"].values())))}
    assert {"FLOWTUNE_S3_ACCESS_KEY_ID", "FLOWTUNE_S3_SECRET_ACCESS_KEY"} <= worker
    actions = identities(monkeypatch)["worker"]
    assert all(action.split(":")[1] in BUCKETS for action in actions), "the worker may reach another bucket"
    for bucket in BUCKETS:  # enough for DVC, the registry, the reports and capture (monitor, gc); never Admin
        assert {f"{a}:{bucket}" for a in ("Read", "Write", "List")} <= actions, bucket
    assert "Admin" not in {action.split(":")[0] for action in actions}


def test_compose_creates_the_capture_bucket_and_serve_may_only_put_there(monkeypatch) -> None:
    """Served traffic goes to a bucket of its own: created by bucket-init, private (the anonymous identity reads
    only the reports), and serve may write into it but neither list nor read it back."""
    buckets_line = (ROOT / "infra/compose/s3_setup.py").read_text().split("BUCKETS = ")[1].split("\n")[0]
    assert '"flowtune-capture"' in buckets_line  # bucket-init creates every one of BUCKETS
    rights = identities(monkeypatch)
    assert not any(action.endswith(":flowtune-capture") for action in rights["anonymous"])
    assert {a for a in rights["serve"] if a.endswith(":flowtune-capture")} == {"Write:flowtune-capture"}


def test_serve_has_read_only_keys_on_the_registry_and_a_token(monkeypatch) -> None:
    serve = compose()["services"]["flowtune-serve"]["environment"]
    assert serve["FLOWTUNE_S3_ACCESS_KEY_ID"].startswith("${FLOWTUNE_SERVE_S3_ACCESS_KEY_ID:?")
    assert serve["FLOWTUNE_S3_SECRET_ACCESS_KEY"].startswith("${FLOWTUNE_SERVE_S3_SECRET_ACCESS_KEY:?")
    assert serve["FLOWTUNE_SERVE_TOKEN"].startswith("${FLOWTUNE_SERVE_TOKEN:?")
    # no write into the registry, no other bucket but the capture one (put only)
    assert identities(monkeypatch)["serve"] == {"Read:flowtune-registry", "List:flowtune-registry",
                                                "Write:flowtune-capture"}


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
    # the Prefect login comes from a Secret, never from the ConfigMap or a literal value
    login = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}["PREFECT_API_AUTH_STRING"]
    assert login["valueFrom"]["secretKeyRef"] == {"name": "flowtune-prefect-auth", "key": "auth-string"}
    assert not any("AUTH" in key for m in by_kind["ConfigMap"] for key in m["data"])


def test_the_compose_prefect_server_demands_a_login_and_the_worker_sends_it() -> None:
    services = compose()["services"]
    server, worker = services["prefect-server"]["environment"], services["worker"]["environment"]
    assert server["PREFECT_SERVER_API_AUTH_STRING"].startswith("${PREFECT_API_AUTH_STRING:?")
    assert worker["PREFECT_API_AUTH_STRING"] == server["PREFECT_SERVER_API_AUTH_STRING"]
    # the health checks use the one endpoint that answers without a login
    for name in ("prefect-server", "worker"):
        assert "/api/health" in " ".join(services[name]["healthcheck"]["test"])


def test_the_compose_service_serves_the_champion_on_loopback_when_ready() -> None:
    serve = compose()["services"]["flowtune-serve"]
    assert serve["ports"] == ["${PUBLISH_HOST:-127.0.0.1}:${FLOWTUNE_SERVE_PORT:-8000}:8000"]
    assert "/readyz" in " ".join(serve["healthcheck"]["test"])  # healthy = a model loaded and warmed up
    assert "flowtune serve --model" in serve["command"][-1] and "--variant" in serve["command"][-1]
    assert not any("S3_ROOT" in str(value) for value in serve["environment"].values())  # not the root keys


def test_k8s_serve_has_a_readiness_probe_and_a_service_that_selects_it() -> None:
    documents = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "infra/k8s/serve.yaml").read_text())}
    assert all(d["metadata"]["namespace"] == "flowtune" for d in documents.values())
    pod = documents["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert documents["Service"]["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert {"name": "http", "containerPort": 8000} in container["ports"]
    sources = [(kind, source["name"]) for entry in container["envFrom"] for kind, source in entry.items()]
    # its token and read-only S3 keys from a Secret of its own, never the ConfigMap or the worker's keys
    assert sources == [("configMapRef", "flowtune-serve"), ("secretRef", "flowtune-serve")]
    assert not any("KEY" in key or "TOKEN" in key for key in documents["ConfigMap"]["data"])
    assert "--host 0.0.0.0" in " ".join(container["args"])  # hence the token (serve refuses to start without)
    assert pod["spec"]["terminationGracePeriodSeconds"] > 10  # longer than serve's --grace-s
