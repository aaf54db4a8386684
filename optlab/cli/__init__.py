"""The `optlab` command and the helpers that keep committed notebooks clean."""
from optlab.cli.main import main

__all__ = ["main"]
