"""Errors that the CLI reports as one line and exit code 2 (a user mistake, not a bug)."""


class UserError(Exception):
    """A mistake in what the user asked for: bad name, bad override, missing data file."""


class DataNotFoundError(UserError):
    """A dataset file or folder is missing; the message names it, the layout and its source."""
