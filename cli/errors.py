"""Errors the CLI turns into exit codes."""


class UsageError(Exception):
    """Raised for bad operator arguments: printed, exit status 2."""


class OperationError(Exception):
    """Raised when a command could not do its work: printed, exit status 1."""
