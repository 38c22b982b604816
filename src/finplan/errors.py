"""finplan's two kinds of failure that reach the user as one clear line.

``InputError`` (exit code 2): the user's files or options are wrong; the line names the file,
the field and what was expected. ``EnvironmentFault`` (exit code 1): the inputs are fine but the
machine is not (an energy counter that reads NaN, an execution provider that is missing, a port
that is taken, Ray that does not start); the line says what to check. Both derive from
``FinplanError``, which the CLI catches (cli/main.py) so that neither prints a traceback.
Library code raises them at the boundary (when a file or argument is read, when a device or
service is first used), never deep inside.
"""
from __future__ import annotations

import os


class FinplanError(Exception):
    """Base of the errors finplan reports as one line; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class InputError(FinplanError):
    """Bad input: names the file, the field and what was expected (exit code 2).

    Parameters
    ----------
    message : str
        What is wrong and what was expected ("is -1; expected a number > 0").
    file : path-like or None
        The file the value came from (None for a command-line option).
    field : str or None
        Where in the file (``blocks[2].flops``) or which option (the caller's name, ``--gamma``).
    """

    exit_code = 2

    def __init__(self, message: str, *, file: str | os.PathLike | None = None, field: str | None = None):
        self.file = None if file is None else str(file)
        self.field = field
        self.detail = message
        where = ": ".join(part for part in (self.file, self.field) if part)
        super().__init__(f"{where}: {message}" if where else message)


# The old name, kept importable while the tree still uses it (renamed mechanically at the merge).
FinplanInputError = InputError


class EnvironmentFault(FinplanError):
    """The machine, not the user's files: one line with what failed and what to check (exit code 1).

    Parameters
    ----------
    message : str
        What failed ("the RAPL counter of package-0 read NaN").
    check : str or None
        What the user should look at ("is /sys/class/powercap readable?"); appended after "; check: ".
    """

    exit_code = 1

    def __init__(self, message: str, *, check: str | None = None):
        self.detail = message
        self.check = check
        super().__init__(f"{message}; check: {check}" if check else message)
