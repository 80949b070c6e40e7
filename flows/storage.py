"""Fail fast, with an actionable message, when object storage is unreachable or refuses us."""

from __future__ import annotations

from botocore.exceptions import ClientError, EndpointConnectionError

from tasks.settings import Settings, s3_client

CREDENTIAL_ERRORS = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403"}


class StorageError(RuntimeError):
    """Object storage cannot be used; the message names the endpoint or bucket and the fix."""


def check_storage(settings: Settings) -> None:
    """Check the endpoint answers, the credentials are accepted and both buckets exist."""
    client = s3_client(settings)
    endpoint = settings.endpoint_url
    for bucket in (settings.dvc_bucket, settings.registry_bucket):
        try:
            client.head_bucket(Bucket=bucket)
        except EndpointConnectionError:
            raise StorageError(
                f"S3 endpoint {endpoint} is unreachable: expected a running S3 server there "
                "(start the local one with `flowtune services up`, or set FLOWTUNE_S3_ENDPOINT_URL)"
            ) from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            if code in CREDENTIAL_ERRORS:
                raise StorageError(
                    f"S3 endpoint {endpoint} rejected the credentials for bucket {bucket!r} ({code}): "
                    "check FLOWTUNE_S3_ACCESS_KEY_ID / FLOWTUNE_S3_SECRET_ACCESS_KEY in .env"
                ) from None
            if code in {"404", "NoSuchBucket"}:
                raise StorageError(
                    f"bucket {bucket!r} does not exist at {endpoint} (`flowtune services up` creates it)"
                ) from None
            raise StorageError(f"S3 endpoint {endpoint}, bucket {bucket!r}: unexpected error {code}") from None
