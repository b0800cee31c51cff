"""Python-side scenario drivers, one module per client (run as subprocesses)."""
