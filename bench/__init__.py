"""The kwire benchmark (issue 5): kwire against the peer broker Tansu. See README.md."""
