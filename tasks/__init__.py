"""flowtune steps: plain Python, no Prefect import, no import-time side effects."""
