"""The one error type of bad input: a config, a file, an argument a user gave.

Every check of user input in ``zoo`` and ``wsl`` raises ``InputError`` (a ``ValueError``) with a
message that names the file or field, what was expected and what was found; the command line
prints it as one ``wsl: error:`` line. Any other exception is a bug in the library and keeps its
traceback, so it is never mistaken for the user's mistake. Input that is allowed but likely not
what was meant gets ``warn``: one ``wsl: warning:`` line on stderr.
"""
from __future__ import annotations

import sys


class InputError(ValueError):
    """Bad input, said in one line a user can act on."""


class MissingFileError(InputError, FileNotFoundError):
    """A file or folder the user named does not exist (also a ``FileNotFoundError``)."""


class UnknownNameError(InputError, KeyError):
    """A metric, hyperparameter, parameter or checkpoint the user named is not there (also a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError's own str() would quote the message
        return str(self.args[0]) if self.args else ""


class OutOfRangeError(InputError, IndexError):
    """A position or row the user gave is out of range (also an ``IndexError``)."""


def warn(message: str) -> None:
    """Say in one line on stderr that an input is used although it is likely not what was meant."""
    print(f"wsl: warning: {message}", file=sys.stderr, flush=True)
