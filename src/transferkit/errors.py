"""Exceptions that transferkit raises for problems a user can fix.

Every error names the thing that is wrong (a file, a config field, a dataset) and says how to fix it.
The CLI turns any :class:`TransferkitError` into a one-line message and exit code 2, so a user never
sees a traceback for bad input.
"""

from __future__ import annotations


class TransferkitError(Exception):
    """Base class: a problem with the user's input or environment, not a bug in transferkit."""


class ConfigError(TransferkitError, ValueError):
    """A configuration field is missing, unknown, or has a bad value."""


class DataError(TransferkitError, ValueError):
    """A dataset is missing, empty, corrupt, or does not match what the run expects."""


class ModelError(TransferkitError, ValueError):
    """A backbone name, weights file or checkpoint cannot be used."""


class RunDirError(TransferkitError):
    """A run directory cannot be created, read or resumed."""


class TrainingError(TransferkitError, FloatingPointError):
    """Training diverged (a loss became NaN or infinite); the last complete checkpoint is kept."""


class NetworkDisabledError(TransferkitError):
    """Something tried to reach the network while transferkit runs offline (the default; ``--online`` allows it).

    Not an ``OSError`` on purpose: libraries catch ``OSError`` around downloads to retry or fall back, which would
    turn this clear refusal into a retry loop or a misleading message.
    """
