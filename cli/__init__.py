"""The `primer-cache` command line."""
