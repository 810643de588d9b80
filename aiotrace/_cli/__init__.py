"""The ``aiotrace`` command: ``aiotrace URL`` (curl/httpstat-style) and its subcommands."""

from .main import main

__all__ = ["main"]
