"""The two errors every command raises.

`multiverse.cli.main` turns them into one line on stderr, `multiverse <command>: error: <message>`:
UsageError exits 2 (the command line or a config is wrong), CommandError exits 1 (valid input, the work failed).
"""
from __future__ import annotations


class UsageError(Exception):
    """Bad input: a flag, a path, a config value. Exit status 2."""

    exit_code = 2


class CommandError(Exception):
    """The input was valid but the work failed (a file could not be read, a server went away). Exit status 1."""

    exit_code = 1
