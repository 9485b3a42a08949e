"""Errors caused by what the user asked for (bad path, bad value), shown as one line by `ltkd`."""


class UserError(Exception):
    """Bad input: the message names the problem and the fix; the CLI prints it without a traceback."""


class DatasetLayoutError(UserError):
    """A dataset root that is missing or not in the expected on-disk layout."""
