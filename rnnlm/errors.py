"""The one exception type that the CLI turns into a one-line message and exit status 2."""


class UserError(Exception):
    """Bad input from the user (a file, a name, a config value): report it, do not crash."""
