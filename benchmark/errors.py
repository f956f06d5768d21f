"""Errors that the user can fix: bad configuration, unknown names, missing data.

The command line prints them as one line (no traceback) and exits with code 2.
"""


class UserInputError(Exception):
    """Something the user gave (a name, a value, a path) cannot be used; the message says how to fix it."""


class ConfigError(UserInputError):
    """A configuration key has an unknown name or a value outside its allowed range."""


class DatasetMissingError(UserInputError):
    """A data set is not on disk and could not be fetched."""
