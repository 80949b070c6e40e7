"""The `flowtune` command line (flows/cli/main.py) and one module per command group: data, label, predict,
registry, serve, sweep and audit. A command parses its arguments and hands over to the layer that does the
work (orchestration, serving, ops); no flow logic lives here."""
