"""The errors a user can fix: bad input, a configuration problem, an unknown name, a refused change.

The command line prints a `UserError` as one `error: ...` line and exits with status 1 (with
`--debug`, its traceback); any other exception is a bug and keeps its traceback. So raise these
only where the message tells the user what to change; a failed invariant stays a plain exception.
The Python API sees ordinary exceptions: each class also derives from the built-in it refines.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; its message names what is wrong and, where it helps, what to do."""


class InvalidInput(UserError, ValueError):
    """A value the user gave (an option, a JSON document, a name) is not acceptable."""


class NotFound(UserError, LookupError):
    """A pattern, version, experiment or decision the user named does not exist."""


class ConfigError(UserError, ValueError):
    """An environment variable or configuration file holds an unusable value."""
