"""Unreachable storage and wrong credentials stop the run with a message naming the endpoint."""

import pytest
from pydantic import SecretStr

from flows.ops.storage import StorageError, check_storage
from tests.helpers import find_free_port

pytestmark = pytest.mark.integration


def test_healthy_services_pass(local_services):
    check_storage(local_services)


def test_unreachable_endpoint_is_named(local_services):
    port = find_free_port()
    settings = local_services.model_copy(update={"s3_port": port, "s3_endpoint_url": None})
    with pytest.raises(StorageError, match=rf"S3 endpoint http://127.0.0.1:{port} is unreachable"):
        check_storage(settings)


def test_wrong_secret_is_reported_as_credentials(local_services):
    settings = local_services.model_copy(update={"s3_secret_access_key": SecretStr("wrong-secret")})
    with pytest.raises(StorageError, match=r"rejected the credentials for bucket 'flowtune-dvc'") as info:
        check_storage(settings)
    assert "wrong-secret" not in str(info.value)


def test_missing_bucket_is_named(local_services):
    settings = local_services.model_copy(update={"dvc_bucket": "no-such-bucket"})
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        check_storage(settings)
