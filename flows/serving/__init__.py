"""`flowtune serve`: predictors of saved models (predictors.py), micro-batching with fair shares (batcher.py),
the limits (limits.py), the token and body guards (guards.py), and the HTTP service with its hot swap (app.py)."""
