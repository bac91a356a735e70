"""Errors raised before a pipeline starts.

A :class:`ConfigError` always says what is wrong *and* what to do about it; the CLI
prints its message and exits with status 2 without a traceback.
"""


class ConfigError(ValueError):
    """A misconfiguration detected before the pipeline runs."""
