"""Turning exceptions into one ``error: ...`` line on stderr and exit code 1.

The library raises typed exceptions; the CLI never shows their tracebacks. Click's own
exceptions (usage errors: exit code 2, ``typer.Exit``, aborts) pass through untouched.
Set ``SEMSTORE_DEBUG=1`` to let unexpected exceptions propagate with their traceback.
"""

from __future__ import annotations

import os
import re
from typing import Any

import typer
from typer.core import TyperGroup

#: Exit code of every runtime error (usage errors keep click's 2).
ERROR_EXIT_CODE = 1

_SQL_NOISE = re.compile(r"\s*(\[SQL:.*|\[parameters:.*|\(Background on this error at:[^)]*\))", re.DOTALL)


class CliError(Exception):
    """A problem found by the CLI itself (bad option value, refused operation)."""


def error_message(exc: BaseException) -> str:
    """A one-line, human-readable description of ``exc`` (no traceback, no SQL dump)."""
    return _one_line(_describe(exc))


def _describe(exc: BaseException) -> str:
    # Imported lazily: the CLI's help must not pay for sqlalchemy/pydantic imports.
    from pydantic import ValidationError
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    if isinstance(exc, ValidationError):
        problems = [f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()]
        return "invalid setting: " + "; ".join(problems)
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"database error: {exc.orig}"
    if isinstance(exc, SQLAlchemyError):
        return f"database error: {exc}"
    if isinstance(exc, FileNotFoundError) and exc.filename is not None:
        return f"no such file or folder: {exc.filename}"
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {exc.filename}"
    text = str(exc) or type(exc).__name__
    if _is_expected(exc):
        return text
    return f"unexpected {type(exc).__name__}: {text} (set SEMSTORE_DEBUG=1 to see the traceback)"


def _is_expected(exc: BaseException) -> bool:
    """Errors that describe a user-side problem well by their message alone."""
    module = type(exc).__module__ or ""
    return isinstance(exc, ValueError | OSError | CliError) or module == "semstore" or module.startswith("semstore.")


def _one_line(text: str) -> str:
    text = _SQL_NOISE.sub("", text)
    return " ".join(text.split())


def _click_exception_base() -> type[Exception]:
    # ClickException lives in click for older typer and in a vendored copy for newer ones.
    return next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "ClickException")


#: Exceptions that carry their own exit code and message (usage errors, --help, --version).
_PASS_THROUGH: tuple[type[BaseException], ...] = (typer.Exit, typer.Abort, _click_exception_base())


class ErrorHandlingGroup(TyperGroup):
    """The CLI's root group: every command's exception becomes one ``error:`` line."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            if os.environ.get("SEMSTORE_DEBUG") == "1":
                raise
            typer.echo(f"error: {error_message(exc)}", err=True)
            raise typer.Exit(ERROR_EXIT_CODE) from None
