"""The compose stack's object storage setup (SeaweedFS), run inside the flowtune image.

`identities`: print SeaweedFS's `-s3.config` for the keys in the environment. Each key gets only what
its holder needs: the root keys (only the s3 and bucket-init containers see them) administer; the worker
reads, writes and lists the four flowtune buckets and nothing else (the capture bucket: the monitor reads it, gc
deletes old batches); serve reads and lists the registry and writes into the capture bucket (`--capture`:
it can neither list nor read captured traffic back);
anonymous callers may GET single objects of the reports bucket (Data Docs links, docs/DECISIONS.md 12),
never list it. Printed at every start of the s3 container, so changed keys apply on restart.

`buckets`: create the four buckets with the root keys (idempotent), for the one-shot bucket-init.
"""

from __future__ import annotations

import json
import os
import sys
import time

BUCKETS = ("flowtune-dvc", "flowtune-registry", "flowtune-reports", "flowtune-capture")
REGISTRY, REPORTS, CAPTURE = "flowtune-registry", "flowtune-reports", "flowtune-capture"


def _keys(prefix: str) -> list[dict[str, str]]:
    """The credentials of `<prefix>_ACCESS_KEY_ID` / `<prefix>_SECRET_ACCESS_KEY`; names the missing one."""
    names = (f"{prefix}_ACCESS_KEY_ID", f"{prefix}_SECRET_ACCESS_KEY")
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        raise SystemExit(f"s3_setup: {', '.join(missing)} is not set (infra/compose/.env)")
    return [{"accessKey": os.environ[names[0]], "secretKey": os.environ[names[1]]}]


def identities() -> dict:
    scoped = [f"{action}:{bucket}" for bucket in BUCKETS for action in ("Read", "Write", "List", "Tagging")]
    return {"identities": [
        {"name": "root", "credentials": _keys("S3_ROOT"), "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "worker", "credentials": _keys("FLOWTUNE_S3"), "actions": scoped},
        {"name": "serve", "credentials": _keys("FLOWTUNE_SERVE_S3"),
         "actions": [f"Read:{REGISTRY}", f"List:{REGISTRY}", f"Write:{CAPTURE}"]},
        {"name": "anonymous", "actions": [f"Read:{REPORTS}"]},
    ]}


def create_buckets(endpoint: str, attempts: int = 30) -> None:
    import boto3
    from botocore.exceptions import ClientError, EndpointConnectionError

    [keys] = _keys("S3_ROOT")
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=keys["accessKey"],
                          aws_secret_access_key=keys["secretKey"], region_name="us-east-1")
    for bucket in BUCKETS:
        for attempt in range(attempts):  # the S3 gateway answers before its filer is ready
            try:
                client.create_bucket(Bucket=bucket)
                break
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    break
                if attempt == attempts - 1:
                    raise
            except EndpointConnectionError:
                if attempt == attempts - 1:
                    raise
            time.sleep(1)
        print(f"bucket {bucket}: ready", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["identities"]:
        print(json.dumps(identities()))
    elif sys.argv[1:2] == ["buckets"] and len(sys.argv) == 3:
        create_buckets(sys.argv[2])
    else:
        raise SystemExit("usage: s3_setup.py identities | buckets ENDPOINT_URL")
