"""The CLI's one error type, in its own module so that every command module (main, serve_bench)
can raise it without importing `cli.main`, which imports them."""
from __future__ import annotations


class UsageError(Exception):
    """A command-line problem found before any work starts: one line, exit code 2."""
