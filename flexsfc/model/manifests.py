"""Reading multi-document YAML manifests from a file or a directory.

Every document keeps where it came from ("file:line"), so later findings can point at it. YAML syntax
errors become issues with the file, line and column instead of an exception, and the other files are
still read, so the user sees every problem at once.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flexsfc.model.errors import Issue, error

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Document:
    obj: dict[str, Any]
    source: str  # "path:line" of the document's first line

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def api_version(self) -> str:
        return str(self.obj.get("apiVersion", ""))


def manifest_files(path: Path) -> list[Path]:
    """The manifest files under `path` (itself if a file), in a stable order."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
    return [path]


def load_documents(path: str | Path) -> tuple[list[Document], list[Issue]]:
    """All documents (dicts) of the manifests at `path`; unreadable files and bad YAML become issues."""
    root = Path(path)
    if not root.exists():
        return [], [error(str(root), "", "path does not exist", "pass a manifest file or a directory")]
    files = manifest_files(root)
    if not files:
        return [], [error(str(root), "", "no .yaml/.yml/.json files found", "point at the manifests")]
    documents: list[Document] = []
    issues: list[Issue] = []
    for file in files:
        docs, file_issues = _load_file(file)
        documents.extend(docs)
        issues.extend(file_issues)
    return documents, issues


def load_text(text: str, name: str = "<string>") -> tuple[list[Document], list[Issue]]:
    """Like :func:`load_documents` for YAML already in memory."""
    documents: list[Document] = []
    issues: list[Issue] = []
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # check_node() said there is one; only the stub's type allows None
                break
            source = f"{name}:{node.start_mark.line + 1}"
            obj = loader.construct_document(node)
            if obj is None:
                continue  # empty document, e.g. a trailing '---'
            _collect(obj, source, documents, issues)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        problem = exc.problem or exc.context or "syntax error"
        issues.append(error(where, "", f"invalid YAML: {problem}", "fix the YAML syntax at that line"))
    except yaml.YAMLError as exc:
        issues.append(error(name, "", f"invalid YAML: {exc}", "fix the YAML syntax"))
    finally:
        loader.dispose()
    return documents, issues


def _load_file(file: Path) -> tuple[list[Document], list[Issue]]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [error(str(file), "", f"cannot read the file: {exc}", "check the path and permissions")]
    return load_text(text, str(file))


def _collect(obj: Any, source: str, documents: list[Document], issues: list[Issue]) -> None:
    if not isinstance(obj, dict):
        issues.append(
            error(
                source,
                "",
                f"a manifest document must be a mapping, got {type(obj).__name__}",
                "write one Kubernetes object (apiVersion, kind, metadata, spec) per document",
            )
        )
        return
    if obj.get("kind") == "List" and isinstance(obj.get("items"), list):  # kubectl's `kind: List`
        for item in obj["items"]:
            _collect(item, source, documents, issues)
        return
    documents.append(Document(obj, source))
