"""kwire client compatibility matrix: `python -m compat`."""
