"""Fixtures of the model tests: write documents to a temporary file and load them."""

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from model_builders import Docs

from flexsfc.model import load_plan
from flexsfc.model.errors import ManifestError
from flexsfc.model.types import Plan


@pytest.fixture
def write_docs(tmp_path: Path) -> Callable[[Docs], Path]:
    """Writes documents as one multi-document YAML file and returns its path."""

    def write(docs: Docs) -> Path:
        path = tmp_path / "manifests.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        return path

    return write


@pytest.fixture
def plan_of(write_docs: Callable[[Docs], Path]) -> Callable[[Docs], Plan]:
    def plan(docs: Docs) -> Plan:
        return load_plan(write_docs(docs))

    return plan


@pytest.fixture
def errors_of(write_docs: Callable[[Docs], Path]) -> Callable[[Docs], list[str]]:
    """The error messages (as printed) the documents produce; fails if they load cleanly."""

    def errors(docs: Docs) -> list[str]:
        with pytest.raises(ManifestError) as caught:
            load_plan(write_docs(docs))
        return [str(issue) for issue in caught.value.errors]

    return errors
