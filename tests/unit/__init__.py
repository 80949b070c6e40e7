"""Fast tests: no processes, no network."""
