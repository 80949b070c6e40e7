"""`flowtune serve`: predictors of saved models (predictors.py), micro-batching (batcher.py) and the HTTP
service with its hot swap (app.py)."""
