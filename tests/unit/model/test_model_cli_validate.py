"""`flexsfc validate`: tables and exit 0 on the examples, every error and exit 1 on bad input."""

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from model_builders import chain_doc, valid_docs

from flexsfc.cli import main

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.mark.parametrize("example", ["transparent-firewall", "l3-chain"])
def test_examples_validate(example: str) -> None:
    result = CliRunner().invoke(main, ["validate", str(EXAMPLES / example)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert (
        "Cross-connections" in result.output and "valid: 1 chain(s), 4 cross-connection(s)" in result.output
    )
    assert f"{example}-client-" in result.output and "L3" in result.output


def test_errors_exit_one_with_path_and_fix(write_docs: Callable) -> None:
    docs = valid_docs()
    docs[0] = chain_doc([{"name": "a", "links": {"a": "eth1", "b": "x" * 16}}, {"name": "b", "links": {}}])
    result = CliRunner().invoke(main, ["validate", str(write_docs(docs))], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert (
        "spec.networkFunctions[0].links.a" in result.output and "fix: remove the self link" in result.output
    )
    assert "spec.networkFunctions[0].links.b" in result.output
    assert "nothing applied" in result.output


def test_missing_path() -> None:
    result = CliRunner().invoke(main, ["validate", "/nonexistent/flexsfc"])
    assert result.exit_code == 1 and "path does not exist" in result.output
