"""Errors that autobp reports to users, each with the exit code the CLI returns for it."""

from __future__ import annotations

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_SWEEP_INCOMPLETE = 4
EXIT_INTERRUPTED = 130


class AutobpError(Exception):
    """An error with a message meant for the user; the CLI prints it without a traceback."""

    exit_code = EXIT_FAILED


class ConfigError(AutobpError):
    """The config file, a `--set` override or a command-line option is wrong."""

    exit_code = EXIT_USAGE


class DataError(AutobpError):
    """A data file is missing or malformed, or does not fit the config."""

    exit_code = EXIT_USAGE


class WriteError(AutobpError):
    """A file could not be written (disk full, file-size limit, no permission): the message names it."""

    exit_code = EXIT_FAILED
