"""The errors sigclass raises at its boundaries.

Every message names the file or field, the problem and the fix. Errors that gather several
problems (a dataset with many bad files) carry them as a list so that a caller, a CLI or the
scoring service can show all of them at once.
"""

from __future__ import annotations

from dataclasses import dataclass


class SigclassError(Exception):
    """Base class of every error sigclass raises on purpose."""


class ConfigError(SigclassError, ValueError):
    """A configuration value or command-line option is invalid."""


@dataclass(frozen=True)
class Problem:
    """One problem found in the input data.

    Attributes:
        path: The file, case or column the problem is about ("" when it concerns the whole input).
        reason: What is wrong and, where there is one, how to fix it.
    """

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class DataError(SigclassError, ValueError):
    """The input data has one or more problems; all of them are listed."""

    def __init__(self, problems: list[Problem] | Problem | str, hint: str | None = None):
        if isinstance(problems, str):
            problems = [Problem("", problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        if len(self.problems) == 1 and not self.hint:
            return str(self.problems[0])
        lines = [f"{len(self.problems)} problem(s) found in the data:"]
        lines += [f"  - {p}" for p in self.problems]
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


class ModelNotFoundError(SigclassError, KeyError):
    """An unknown model name was asked for."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class WeightsNotFoundError(SigclassError, FileNotFoundError):
    """Pretrained weights were asked for but are not available offline."""


class ArtifactError(SigclassError, ValueError):
    """A saved model or run directory is missing, corrupted or tampered with."""


class ExplainError(SigclassError, ValueError):
    """An explanation (class activation map) cannot be computed for this model."""


class TrackingError(SigclassError, RuntimeError):
    """The experiment-tracking store or the model registry cannot be used as asked."""


class EngineError(SigclassError, RuntimeError):
    """A job on an external engine (a Spark cluster) failed; what it finished is kept."""
