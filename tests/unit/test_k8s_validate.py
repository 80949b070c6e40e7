"""infra/k8s/validate.py, the offline check `make lint` runs on the Kubernetes manifests, rejects what it is
there to reject: each test breaks a temporary copy of the real files in one way and expects that one problem
(docs/DECISIONS.md 74). The check could otherwise pass on anything and prove nothing."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

K8S = ROOT / "infra/k8s"
TEMPLATE = "train-gpu-job-template.json"


def _module():
    spec = importlib.util.spec_from_file_location("k8s_validate", K8S / "validate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


validate = _module()


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of infra/k8s's manifests and job template in a temporary folder."""
    for path in validate.default_paths():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def problems_after(folder: Path, name: str, old: str, new: str) -> list[str]:
    path = folder / name
    text = path.read_text()
    assert old in text, f"{old!r} is not in {name}: the test no longer breaks anything"
    path.write_text(text.replace(old, new, 1))
    return validate.check(sorted(folder.iterdir()))[2]


def test_the_shipped_manifests_and_the_rendered_job_pass() -> None:
    resources, versions, problems = validate.check(validate.default_paths())
    assert problems == []
    kinds = {resource["kind"] for _, resource in resources}
    assert {"Deployment", "Service", "ConfigMap", "Role", "RoleBinding", "ServiceAccount", "Job"} <= kinds
    assert len(versions) >= 2 and versions[0].startswith("1.33")


@pytest.mark.parametrize(
    ("name", "old", "new", "expected"),
    [
        # a misspelled field: Kubernetes would drop it (or refuse the object), so the pods would have no container
        ("serve.yaml", "      containers:", "      contianers:", "contianers"),
        # a misspelled field deeper down (a probe's timing) and in metadata
        ("serve.yaml", "periodSeconds: 5", "periodSecond: 5", "periodSecond"),
        ("worker.yaml", "  labels:\n    app: flowtune-worker", "  lables:\n    app: flowtune-worker", "lables"),
        # wrong types: a word for a count, a number where a ConfigMap holds only strings
        ("serve.yaml", "replicas: 2", "replicas: two", "'two' is not of type 'integer'"),
        ("worker.yaml", "FLOWTUNE_WORK_POOL: flowtune-gpu", "FLOWTUNE_WORK_POOL: 8", "8 is not of type 'string'"),
        # a required field missing: a container without a name
        ("worker.yaml", "        - name: worker\n          image:", "        - image:",
         "'name' is a required property"),
        # an API version no release serves any more (apps/v1beta1 went in 1.16): an error, not the CLI's warning
        ("serve.yaml", "apiVersion: apps/v1", "apiVersion: apps/v1beta1", "has no Deployment in apps/v1beta1"),
        # the job template is checked as the Job it renders to: a typo in it, or a variable of the wrong type
        (TEMPLATE, '"tolerations"', '"toleration"', "toleration"),
        (TEMPLATE, '"finished_job_ttl": {"type": "integer", "default": 3600}',
         '"finished_job_ttl": {"type": "integer", "default": "1h"}', "ttlSecondsAfterFinished"),
    ],
)
def test_a_schema_error_is_rejected(copy: Path, name: str, old: str, new: str, expected: str) -> None:
    problems = problems_after(copy, name, old, new)  # `contianers` also leaves `containers` missing: two lines
    assert any(expected in problem for problem in problems), problems
    assert all(problem.startswith(name) for problem in problems) and len(problems) <= 2, problems


@pytest.mark.parametrize(
    ("name", "old", "new", "expected"),
    [
        ("serve.yaml", "  selector:\n    matchLabels:\n      app: flowtune-serve",
         "  selector:\n    matchLabels:\n      app: flowtune-server", "does not select its pods"),
        ("serve.yaml", "              path: /readyz\n              port: http", "              path: /readyz\n"
         "              port: web", "readinessProbe port 'web'"),
        ("serve.yaml", "      targetPort: http", "      targetPort: web", "targetPort 'web'"),
        ("serve.yaml", "  selector:\n    app: flowtune-serve\n  ports:", "  selector:\n    app: serve\n  ports:",
         "selects no pod"),
        ("worker.yaml", "serviceAccountName: flowtune-worker", "serviceAccountName: flowtune-workr",
         "ServiceAccount 'flowtune-workr'"),
        ("worker.yaml", "  kind: Role\n  name: flowtune-worker", "  kind: Role\n  name: flowtune-admin",
         "Role 'flowtune-admin'"),
        ("serve.yaml", "            - configMapRef:\n                name: flowtune-serve",
         "            - configMapRef:\n                name: flowtune-srv", "ConfigMap 'flowtune-srv'"),
    ],
)
def test_a_wiring_error_is_rejected(copy: Path, name: str, old: str, new: str, expected: str) -> None:
    problems = problems_after(copy, name, old, new)
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_template_placeholder_without_a_value_is_rejected(copy: Path) -> None:
    template = json.loads((copy / TEMPLATE).read_text())
    template["job_configuration"]["job_manifest"]["spec"]["activeDeadlineSeconds"] = "{{ deadline }}"
    (copy / TEMPLATE).write_text(json.dumps(template))
    with pytest.raises(ValueError, match="deadline"):
        validate.check([copy / TEMPLATE])


@pytest.mark.slow  # two interpreters importing Prefect: ~6 s
def test_the_script_exits_non_zero_and_names_the_problem(copy: Path) -> None:
    """As `make lint` runs it: a broken copy fails the target, the real files pass it."""
    (copy / "serve.yaml").write_text((copy / "serve.yaml").read_text().replace("containers:", "contianers:"))
    broken = subprocess.run([sys.executable, str(K8S / "validate.py"), str(copy / "serve.yaml")],
                            capture_output=True, text=True, cwd=ROOT)
    assert broken.returncode == 1 and "contianers" in broken.stderr, broken.stderr
    assert subprocess.run([sys.executable, str(K8S / "validate.py")], capture_output=True, cwd=ROOT).returncode == 0
