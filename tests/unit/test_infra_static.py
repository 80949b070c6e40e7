"""infra/compose and infra/k8s, checked without Docker or a cluster (none runs here)."""

from __future__ import annotations

import json
import re

import yaml

from tests.helpers import ROOT

COMPOSE = ROOT / "infra/compose/docker-compose.yml"
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(:?[-?][^}]*)?\}")
SECRETS = {"POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "FLOWTUNE_S3_ACCESS_KEY_ID",
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


def with_defaults(text: str) -> str:
    """`text` as compose reads it with no variable set: `${NAME:-default}` becomes `default`."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", text)


def test_every_port_is_published_on_loopback_by_default() -> None:
    published = [(name, port) for name, service in compose()["services"].items()
                 for port in service.get("ports", [])]
    assert published, "no port published: the test would prove nothing"
    for name, port in published:
        assert with_defaults(str(port)).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"


def policy(name: str) -> dict:
    return json.loads(compose()["configs"][name]["content"])


def mounted_configs(service: dict) -> dict[str, str]:
    return {config["source"]: config["target"] for config in service.get("configs", [])}


def test_anonymous_readers_may_only_get_report_objects() -> None:
    """No listing (s3:ListBucket), no writes, no other bucket: `mc anonymous set download` allowed listing."""
    init = compose()["services"]["bucket-init"]
    command = " ".join(init["command"])
    target = mounted_configs(init)["reports-anonymous-read"]
    assert f"mc anonymous set-json {target} store/flowtune-reports" in command
    assert "anonymous set download" not in command and "anonymous set public" not in command
    [statement] = policy("reports-anonymous-read")["Statement"]
    assert statement["Effect"] == "Allow" and statement["Principal"] == {"AWS": ["*"]}
    assert statement["Action"] == ["s3:GetObject"]
    assert statement["Resource"] == ["arn:aws:s3:::flowtune-reports/*"]


def assert_bucket_init_makes_user(init: dict, keys: str, policy_name: str, config: str) -> None:
    """bucket-init creates the user of `<keys>_ACCESS_KEY_ID` and attaches the policy mounted from `config`."""
    command, target = " ".join(init["command"]), mounted_configs(init)[config]
    for step in (f'mc admin user add store "$${keys}_ACCESS_KEY_ID" "$${keys}_SECRET_ACCESS_KEY"',
                 f"mc admin policy create store {policy_name} {target}",
                 f'mc admin policy attach store {policy_name} --user "$${keys}_ACCESS_KEY_ID"'):
        assert step in command, step


def test_the_worker_has_a_user_limited_to_the_four_buckets_not_the_root_keys() -> None:
    services = compose()["services"]
    root_variables = set(VARIABLE.findall(" ".join(map(str, services["s3"]["environment"].values()))))
    worker_variables = set(VARIABLE.findall(" ".join(map(str, services["worker"]["environment"].values()))))
    assert {name for name, _ in root_variables} == {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
    assert not {name for name, _ in root_variables} & {name for name, _ in worker_variables}
    assert {"FLOWTUNE_S3_ACCESS_KEY_ID", "FLOWTUNE_S3_SECRET_ACCESS_KEY"} <= {name for name, _ in worker_variables}
    assert_bucket_init_makes_user(services["bucket-init"], "FLOWTUNE_S3", "flowtune-worker", "worker-policy")
    allowed = {bucket: set() for bucket in BUCKETS}
    for statement in policy("worker-policy")["Statement"]:
        assert statement["Effect"] == "Allow" and "Principal" not in statement
        assert all(action.startswith("s3:") and "*" not in action for action in statement["Action"])
        for resource in statement["Resource"]:
            bucket = resource.removeprefix("arn:aws:s3:::").removesuffix("/*")
            assert bucket in allowed, f"the worker may reach {resource}"
            allowed[bucket] |= set(statement["Action"])
    for bucket, actions in allowed.items():  # enough for DVC, the registry, the reports, the monitor and gc
        assert {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= actions, bucket


def test_serve_has_a_read_only_user_on_the_registry_a_put_only_one_on_the_capture_bucket_and_a_token() -> None:
    services = compose()["services"]
    serve = services["flowtune-serve"]["environment"]
    assert serve["FLOWTUNE_S3_ACCESS_KEY_ID"].startswith("${FLOWTUNE_SERVE_S3_ACCESS_KEY_ID:?")
    assert serve["FLOWTUNE_S3_SECRET_ACCESS_KEY"].startswith("${FLOWTUNE_SERVE_S3_SECRET_ACCESS_KEY:?")
    assert serve["FLOWTUNE_SERVE_TOKEN"].startswith("${FLOWTUNE_SERVE_TOKEN:?")
    assert_bucket_init_makes_user(services["bucket-init"], "FLOWTUNE_SERVE_S3", "flowtune-serve", "serve-policy")
    granted = {(action, resource) for statement in policy("serve-policy")["Statement"]
               for action in statement["Action"] for resource in statement["Resource"]}
    assert granted == {("s3:ListBucket", "arn:aws:s3:::flowtune-registry"),
                       ("s3:GetBucketLocation", "arn:aws:s3:::flowtune-registry"),
                       ("s3:GetObject", "arn:aws:s3:::flowtune-registry/*"),
                       ("s3:PutObject", "arn:aws:s3:::flowtune-capture/*")}  # no other write, no other bucket


def test_bucket_init_creates_every_bucket_and_the_capture_bucket_stays_private() -> None:
    command = " ".join(compose()["services"]["bucket-init"]["command"])
    made = re.search(r"mc mb --ignore-existing ([^&]+)&&", command)[1].split()
    assert made == [f"store/{bucket}" for bucket in BUCKETS]
    assert "flowtune-capture" not in compose()["configs"]["reports-anonymous-read"]["content"]
    assert command.count("mc anonymous") == 1  # the reports bucket's single-object GET, nothing else


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
    assert not any("MINIO_ROOT" in str(value) for value in serve["environment"].values())  # not the root keys


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
    assert documents["ConfigMap"]["data"]["FLOWTUNE_CAPTURE_BUCKET"] == "flowtune-capture"  # --capture's bucket
    assert "--host 0.0.0.0" in " ".join(container["args"])  # hence the token (serve refuses to start without)
    assert pod["spec"]["terminationGracePeriodSeconds"] > 10  # longer than serve's --grace-s
