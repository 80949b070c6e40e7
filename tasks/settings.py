"""Where things run: endpoints, ports, buckets and credentials, from the environment or `.env`.

These are not results-affecting knobs (those live in params.yaml). Local defaults work out of the
box; the S3 credentials have no default in code: `flowtune services up` generates them once into the
git-ignored `.env`, so no secret is ever committed.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLOWTUNE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Where local services keep their data, pids and logs (git-ignored).
    state_dir: Path = Path(".flowtune")

    s3_host: str = "127.0.0.1"
    s3_port: int = 8333
    # Set to use an existing S3 service instead of the local SeaweedFS (e.g. https://s3.example.com).
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    dvc_bucket: str = "flowtune-dvc"
    registry_bucket: str = "flowtune-registry"
    registry_prefix: str = "models"
    # Human-readable reports (GX Data Docs) per flow run. The local SeaweedFS serves this bucket to
    # anonymous readers so the links in the Prefect UI open in a browser; it holds no credentials.
    reports_bucket: str = "flowtune-reports"
    # What `flowtune serve --capture` records (requests, answers, statistics): never public, unlike the reports.
    capture_bucket: str = "flowtune-capture"

    # The augment stage: shards > 1 runs them in parallel on Dask (a local cluster, or this scheduler).
    # Where it runs, not what it computes: the output is the same for any number of shards.
    augment_shards: int = 1
    dask_address: str | None = None

    # SeaweedFS internal ports (master, volume, filer); shift them to run a second instance.
    seaweed_master_port: int = 9333
    seaweed_volume_port: int = 8080
    seaweed_filer_port: int = 8888

    # `flowtune services up` starts a Prefect worker for the `flowtune-local` process pool (deployed and
    # scheduled runs execute there); false for a machine that only submits runs.
    start_worker: bool = True

    # How long an in-place `flowtune run` waits for another run in the same checkout to finish before
    # it gives up and names the holder (flows/orchestration/workspace.py `checkout_lock`).
    run_lock_timeout_s: float = 600.0

    # A run refuses to start with less free disk than this (GB, 10^9 bytes) where the checkout and the state
    # dir live (flows/ops/diskspace.py): a stage that hits a full disk mid-way wastes the run. 0 turns it off.
    min_free_gb: float = 5.0

    prefect_host: str = "127.0.0.1"
    prefect_port: int = 4200
    prefect_api_url: str | None = Field(default=None, validation_alias="PREFECT_API_URL")
    # Basic auth of the Prefect API, "user:password" (Prefect's own client setting, so `prefect` commands
    # run in this checkout read it from `.env` too). `flowtune services up` generates it for a local server.
    prefect_api_auth_string: SecretStr | None = Field(default=None, validation_alias="PREFECT_API_AUTH_STRING")

    # Label Studio (`flowtune services up --with label-studio`, the labelling loop): its own venv (it cannot join
    # our lock), bound to 127.0.0.1. A URL set here is an external instance: not started, only checked.
    label_studio_port: int = 8090
    label_studio_url: str | None = None
    label_studio_venv: Path | None = None  # default: <state_dir>/tools/label-studio-<version>/ (a cache of its own)
    label_studio_token: SecretStr | None = None  # generated once into .env (40 hex) for a local instance
    label_studio_password: SecretStr | None = None

    @property
    def labelling_url(self) -> str:
        return (self.label_studio_url or f"http://127.0.0.1:{self.label_studio_port}").rstrip("/")

    @property
    def endpoint_url(self) -> str:
        return self.s3_endpoint_url or f"http://{self.s3_host}:{self.s3_port}"

    @property
    def api_url(self) -> str:
        return self.prefect_api_url or f"http://{self.prefect_host}:{self.prefect_port}/api"

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    def secret_key(self) -> str:
        if self.s3_access_key_id is None or self.s3_secret_access_key is None:
            raise RuntimeError(
                "S3 credentials are not set: set FLOWTUNE_S3_ACCESS_KEY_ID and "
                "FLOWTUNE_S3_SECRET_ACCESS_KEY (or run `flowtune services up`, which creates them in .env)"
            )
        return self.s3_secret_access_key.get_secret_value()


def s3_client(settings: Settings, attempts: int = 3, read_timeout: float = 60):
    """A boto3 S3 client for the configured endpoint (path-style addressing, as SeaweedFS needs).
    `attempts`/`read_timeout`: fewer and shorter for a caller that retries on its own (serve's capture)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.secret_key(),
        region_name=settings.s3_region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": attempts, "mode": "standard"},
            connect_timeout=5,
            read_timeout=read_timeout,
        ),
    )
