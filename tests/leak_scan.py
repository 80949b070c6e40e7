"""Where a run could leak a secret, read back after the run: used by the e2e run and the deployments test.

The secrets themselves live in `.env`, `.dvc/config.local` and `.flowtune/s3.json` (all 0600) and in
Prefect's block storage; every place below is read by others (logs, the Prefect API, the buckets,
DVC-tracked files), so none of them may hold a secret.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import api_post

MAX_OBJECT_BYTES = 20_000_000  # weights above this size hold no text


def prefect_rows(settings, what: str) -> list[dict]:
    """Every row of a Prefect `/<what>/filter` endpoint (artifacts, logs), page by page, logged in."""
    rows, offset = [], 0
    while page := api_post(settings, f"{what}/filter", json={"limit": 200, "offset": offset}).raise_for_status().json():
        rows += page
        offset += len(page)
    return rows


def stored_objects(settings) -> dict[str, bytes]:
    """Every object of the three buckets (registry: weights, lineage, cards, manifests, aliases; reports:
    Data Docs; DVC: data and models), up to MAX_OBJECT_BYTES each."""
    from tasks.settings import s3_client

    client, objects = s3_client(settings), {}
    for bucket in (settings.registry_bucket, settings.reports_bucket, settings.dvc_bucket):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                if item["Size"] <= MAX_OBJECT_BYTES:
                    body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"]
                    objects[f"s3://{bucket}/{item['Key']}"] = body.read()
    return objects


def readable_places(repo: Path, settings, output: str) -> dict[str, bytes]:
    """The command's output, the service logs, Prefect's logs and artifacts, every stored object and every
    file under the checkout's data/ (DVC-tracked outputs), each by a name that says where it is."""
    places: dict[str, bytes] = {"command output": output.encode()}
    places |= {str(log): log.read_bytes() for log in (repo / ".flowtune").rglob("*.log")}
    places |= {f"Prefect artifact {a['key']} ({a['id']})": json.dumps(a).encode()
               for a in prefect_rows(settings, "artifacts")}
    places |= {f"Prefect log line {row['id']}": row["message"].encode() for row in prefect_rows(settings, "logs")}
    places |= stored_objects(settings)
    places |= {str(path): path.read_bytes() for path in (repo / "data").rglob("*")
               if path.is_file() and path.stat().st_size <= MAX_OBJECT_BYTES}
    kinds = {"log": any(k.endswith(".log") for k in places), "artifact": any("artifact" in k for k in places),
             "lineage": any(k.endswith("lineage.json") for k in places),
             # published to the reports bucket (data-docs/<run>/...), built in the checkout (data/reports/data_docs)
             "data docs": any(("data-docs/" in k or "data_docs" in k) and k.endswith(".html") for k in places)}
    assert all(kinds.values()), kinds  # the scan reached each kind of place
    return places


def leaks(secrets: dict[str, str], places: dict[str, bytes]) -> list[tuple[str, str]]:
    """(secret's name, place) for every place that holds one of `secrets`."""
    assert all(len(secret) >= 16 for secret in secrets.values()), "a short secret would match by chance"
    return [(name, where) for name, secret in secrets.items() for where, content in places.items()
            if secret.encode() in content]
