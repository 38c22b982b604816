"""The one exception type that reaches the user as a single clear line (exit code 2)."""
from __future__ import annotations

import os


class FinplanInputError(Exception):
    """Bad input: names the file, the field and what was expected.

    The CLI prints ``str(error)`` on one line and exits with code 2; no traceback.
    Library code raises it at the boundary (when a file or argument is read), never deep inside.
    """

    def __init__(self, message: str, *, file: str | os.PathLike | None = None, field: str | None = None):
        self.file = None if file is None else str(file)
        self.field = field
        self.detail = message
        where = ": ".join(part for part in (self.file, self.field) if part)
        super().__init__(f"{where}: {message}" if where else message)
