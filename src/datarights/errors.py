"""User-facing errors: the CLI prints them as one line and exits with code 2; the web answers with
the message alone, in plain words."""


class DatarightsError(Exception):
    """Bad input or an impossible request, explained in one line (no traceback).

    `hint`: where a command-line user finds more (`datarights world info`); the CLI adds it in
    brackets, the web leaves it out (a page never tells an owner to run a command)."""

    def __init__(self, message: str = "", hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class NotFound(DatarightsError):
    """A row that does not exist, or that the caller may not see (the web answers 404 for both)."""
