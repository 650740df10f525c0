"""The one base class for mistakes a user can fix (bad config, bad input, wrong launch).

The ``seqpt`` command prints these as a one-paragraph message and exits with status 2; any other
exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error whose message tells the user what to change."""
