"""Errors are values with context and a next step. The CLI maps ``exit_code`` to the process status."""

from __future__ import annotations


class CodexError(Exception):
    """A failure the user can act on. ``hint`` says what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(CodexError):
    """Bad input: nothing was loaded and nothing was written."""

    exit_code = 2


class ParamError(UsageError):
    """One or more request fields are invalid. ``problems`` holds one line per field."""

    def __init__(self, problems: list[str], engine: str, task: str, hint: str | None = None):
        self.problems = problems
        self.engine = engine
        self.task = task
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "field" if len(problems) == 1 else "fields"
        super().__init__(f"invalid request for {engine} {task} ({len(problems)} {noun}):\n{lines}", hint)


class UnknownEngineError(UsageError):
    pass


class ModelNotFoundError(UsageError):
    pass
