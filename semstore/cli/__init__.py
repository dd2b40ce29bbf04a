"""The ``semstore`` command-line interface (``semstore --help``).

:data:`app` is the typer application, :func:`main` the console-script entry point.
"""

from semstore.cli.app import app, main

__all__ = ["app", "main"]
