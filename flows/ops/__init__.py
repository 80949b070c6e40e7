"""Running flowtune day to day: the local services (SeaweedFS, Prefect server and worker, Label Studio),
retention (`flowtune gc`), failure and drift alerts (notify), the drift monitor, and the checks that refuse a
run on a full disk or unreachable storage."""
