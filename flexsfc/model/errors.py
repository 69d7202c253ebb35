"""Validation findings: each names the object, the field path, what is wrong and how to fix it.

Loaders and validators collect every :class:`Issue` instead of stopping at the first one, so a user
sees all problems of a manifest set at once; :class:`ManifestError` carries them when anything is
an error (nothing is applied then).
"""

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Issue:
    obj: str  # e.g. "ServiceFunctionChain default/transparent-firewall"
    path: str  # field path inside the object, e.g. "spec.networkFunctions[1].links.gw"
    message: str
    fix: str
    severity: Severity = Severity.ERROR
    source: str = ""  # "file:line" of the YAML document, when read from a file

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def where(self) -> str:
        location = f"{self.obj}" + (f" [{self.source}]" if self.source else "")
        return f"{location} {self.path}" if self.path else location

    def __str__(self) -> str:
        return f"{self.severity}: {self.where()}: {self.message}. Fix: {self.fix}"


def error(obj: str, path: str, message: str, fix: str, source: str = "") -> Issue:
    return Issue(obj, path, message, fix, Severity.ERROR, source)


def warning(obj: str, path: str, message: str, fix: str, source: str = "") -> Issue:
    return Issue(obj, path, message, fix, Severity.WARNING, source)


class ManifestError(ValueError):
    """Raised when manifests hold at least one error; lists every issue (warnings included)."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = list(issues)
        errors = self.errors
        lines = [f"{len(errors)} error(s) in the manifests:"] + [f"  - {issue}" for issue in errors]
        super().__init__("\n".join(lines))

    @property
    def errors(self) -> list[Issue]:
        return [issue for issue in self.issues if issue.is_error]

    @property
    def warnings(self) -> list[Issue]:
        return [issue for issue in self.issues if not issue.is_error]


class IssueCollector:
    """Collects the issues of one object, so every finding carries the same object name and source."""

    def __init__(self, obj: str, source: str = "", sink: list[Issue] | None = None) -> None:
        self.obj = obj
        self.source = source
        self.issues: list[Issue] = sink if sink is not None else []

    def error(self, path: str, message: str, fix: str) -> None:
        self.issues.append(error(self.obj, path, message, fix, self.source))

    def warning(self, path: str, message: str, fix: str) -> None:
        self.issues.append(warning(self.obj, path, message, fix, self.source))

    @property
    def has_errors(self) -> bool:
        return any(issue.is_error for issue in self.issues)
