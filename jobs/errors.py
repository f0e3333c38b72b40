"""The command's user-facing error (its own module: `python -m jobs.cli` runs cli.py as __main__,
and every other module must raise the same class the entry point catches)."""


class JobError(Exception):
    """A user-facing error: bad config value, missing file, wrong data."""
