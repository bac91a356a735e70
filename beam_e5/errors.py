"""Errors raised before a pipeline starts.

A :class:`ConfigError` always says what is wrong *and* what to do about it; the CLI
prints its message and exits with status 2 without a traceback.
"""


class ConfigError(ValueError):
    """A misconfiguration detected before the pipeline runs."""


class ModelUnreachable(ConfigError):
    """The model cannot be reached from this machine: a local path that does not exist here,
    a Hugging Face name without network (or cache), a ``gs://`` directory these credentials
    cannot list. The CLI stops on it (exit 2); Python code building a pipeline for remote
    workers accepts it and resolves the model on the workers
    (:meth:`~beam_e5.model.config.EncoderConfig.resolve_where_reachable`)."""


class RunFailed(RuntimeError):
    """The pipeline ran, but its result must not be trusted or published as is.

    Raised after the run when an input file could not be read to its end, or when a publish
    guard refused to move the pointer. The output directory holds the run (with its
    manifest, for inspection); the CLI prints the message and exits with status 1.
    """
