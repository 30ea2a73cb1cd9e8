"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class DatarightsError(Exception):
    """Bad input or an impossible request, explained in one line (no traceback)."""


class NotFound(DatarightsError):
    """A row that does not exist, or that the caller may not see (the web answers 404 for both)."""
