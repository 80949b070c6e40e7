"""Fail fast, with an actionable message, when object storage is unreachable or refuses us; the registry of the
configured storage, and a model folder fetched from it."""

from __future__ import annotations

from pathlib import Path

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from tasks.settings import Settings, s3_client

CREDENTIAL_ERRORS = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403"}
UNREACHABLE = (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectTimeoutError)
BUSY_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"}


class StorageError(RuntimeError):
    """Object storage cannot be used; the message names the endpoint or bucket and the fix."""


def check_storage(settings: Settings) -> None:
    """Check the endpoint answers, the credentials are accepted and both buckets exist."""
    for bucket in (settings.dvc_bucket, settings.registry_bucket):
        check_bucket(settings, bucket)


def check_bucket(settings: Settings, bucket: str) -> None:
    """One HEAD request: StorageError naming the endpoint, the bucket and the fix if it fails."""
    try:
        s3_client(settings).head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(storage_problem(settings, bucket, exc)) from None


def storage_problem(settings: Settings, bucket: str, exc: Exception) -> str:
    """What a boto error means for the user, in one line with the fix."""
    endpoint = settings.endpoint_url
    if isinstance(exc, UNREACHABLE):
        return (f"S3 endpoint {endpoint} is unreachable: expected a running S3 server there "
                "(start the local one with `flowtune services up`, or set FLOWTUNE_S3_ENDPOINT_URL)")
    if not isinstance(exc, ClientError):
        return f"S3 endpoint {endpoint}, bucket {bucket!r}: {type(exc).__name__}: {exc}"
    code = exc.response.get("Error", {}).get("Code", "?")
    if code in CREDENTIAL_ERRORS:
        return (f"S3 endpoint {endpoint} rejected the credentials for bucket {bucket!r} ({code}): "
                "check FLOWTUNE_S3_ACCESS_KEY_ID / FLOWTUNE_S3_SECRET_ACCESS_KEY in .env")
    if code in {"404", "NoSuchBucket"}:
        return f"bucket {bucket!r} does not exist at {endpoint} (`flowtune services up` creates it)"
    return f"S3 endpoint {endpoint}, bucket {bucket!r}: unexpected error {code}"


def is_transient(exc: BaseException) -> bool:
    """Whether trying again later may succeed: storage unreachable, a timeout, a 5xx or throttling answer.
    A missing object, refused credentials or a checksum mismatch stay as they are."""
    if isinstance(exc, (*UNREACHABLE, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or exc.response.get("Error", {}).get("Code") in BUSY_CODES
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return cause is not None and cause is not exc and is_transient(cause)


def open_registry():
    """The registry of the configured storage, checked first (one request): an unreachable endpoint, wrong
    keys or a missing bucket fail here with check_bucket's message."""
    from flows.registry import Registry

    settings = Settings()
    check_bucket(settings, settings.registry_bucket)
    return Registry(s3_client(settings), settings.registry_bucket, settings.registry_prefix)


def model_folder(ref: str, dest: Path, variant: str | None = None) -> Path:
    """A model folder (`ref` itself, or one of its variants) or a registry reference, fetched into `dest`
    without the variants it does not ask for."""
    from flows.registry import local_variant

    if Path(ref).is_dir():
        return local_variant(Path(ref), variant)
    registry = open_registry()
    name, version = registry.resolve(ref)
    return registry.download(name, version, dest, variant=variant, with_variants=False)
