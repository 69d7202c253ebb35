"""What `flexsfc validate` says about a chain's NFs without Deployments, and what it does not say when
the chain itself is invalid (its errors, not one follow-up warning per Deployment)."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from model_builders import Docs, deployment_doc, nad_doc, valid_docs

from flexsfc.cli import main
from flexsfc.model import ManifestError, load_plan
from flexsfc.model.types import Plan

NO_CHAIN = "is in no ServiceFunctionChain"


def test_every_nf_of_the_chain_without_deployment_is_a_warning_naming_it(plan_of: Callable) -> None:
    docs = valid_docs()
    docs[0]["spec"]["networkFunctions"] += [{"name": "monitor", "links": {}}, {"name": "probe"}]
    docs = [d for d in docs if not (d["kind"] == "Deployment" and d["metadata"]["name"] == "c")]
    plan: Plan = plan_of(docs)
    missing = [w for w in plan.warnings if "no Deployment in namespace 'default'" in w]
    assert len(missing) == 3, plan.warnings
    for index, nf in ((2, "c"), (3, "monitor"), (4, "probe")):
        (warning,) = [w for w in missing if f"NF {nf!r}" in w]
        assert f"spec.networkFunctions[{index}]" in warning and f"network-function={nf}" in warning


def _chain_errors_and_warnings(docs: Docs, write_docs: Callable[[Docs], Path]) -> tuple[list, list]:
    with pytest.raises(ManifestError) as caught:
        load_plan(write_docs(docs))
    return [str(i) for i in caught.value.errors], [str(i) for i in caught.value.warnings]


def test_an_invalid_chain_is_not_buried_under_no_chain_warnings(write_docs: Callable) -> None:
    docs = valid_docs()
    docs[0]["spec"]["networkFunctions"][0]["links"] = {"ghost": "eth1"}  # unknown NF, asymmetric link
    docs.append(deployment_doc("orphan", "a-eth1@eth1"))  # named by no chain, valid or not
    errors, warnings = _chain_errors_and_warnings(docs, write_docs)
    assert any("unknown NF 'ghost'" in e for e in errors)
    assert [w for w in warnings if NO_CHAIN in w] == [
        next(w for w in warnings if "NF 'orphan' is in no ServiceFunctionChain" in w)
    ]


def test_a_chain_whose_nf_list_is_unreadable_silences_its_namespace_only(write_docs: Callable) -> None:
    docs = valid_docs()
    docs[0]["spec"]["networkFunctions"] = "a, b, c"
    elsewhere = deployment_doc("x", "x-net@eth1")
    elsewhere["metadata"]["namespace"] = "other"
    docs.append(elsewhere)
    errors, warnings = _chain_errors_and_warnings(docs, write_docs)
    assert any("spec.networkFunctions" in e for e in errors)
    assert [w for w in warnings if NO_CHAIN in w] == [next(w for w in warnings if "Deployment other/x" in w)]


@pytest.mark.parametrize("field", ["stateDir", "pinDir", "kubeconfig"])
def test_a_network_attachment_may_not_set_node_level_fields(write_docs: Callable, field: str) -> None:
    docs = valid_docs()
    docs[2] = nad_doc("b-in0", **{field: "/var/lib/somewhere"})
    errors, _ = _chain_errors_and_warnings(docs, write_docs)
    (error,) = [e for e in errors if field in e]
    assert f"spec.config.{field}" in error and "node-level" in error and "/etc/flexsfc/cni.conf" in error


def test_validate_prints_the_errors_first_and_counts_both(write_docs: Callable) -> None:
    docs = valid_docs()
    docs[0]["spec"]["networkFunctions"][0]["links"]["a"] = "eth9"  # a self link: the chain is invalid
    docs.append(deployment_doc("orphan", "a-eth1@eth1"))
    result = CliRunner().invoke(main, ["validate", str(write_docs(docs))], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith(("error", "warning"))]
    kinds = [line.split()[0] for line in lines]
    assert kinds == sorted(kinds) and kinds[0] == "error" and "warning" in kinds  # errors, then warnings
    assert sum(NO_CHAIN in line for line in result.output.splitlines()) == 1  # only the orphan's
    assert f"{kinds.count('error')} error(s), {kinds.count('warning')} warning(s): nothing applied" in (
        result.output
    )


@pytest.mark.parametrize("name", ["../x", "a b", ".hidden", 7])
def test_a_network_attachment_name_follows_the_cni_rule(write_docs: Callable, name: object) -> None:
    docs = valid_docs()
    docs[2] = nad_doc("b-in0")
    docs[2]["spec"]["config"] = json.dumps(json.loads(docs[2]["spec"]["config"]) | {"name": name})
    errors, _ = _chain_errors_and_warnings(docs, write_docs)
    (error,) = [e for e in errors if "spec.config.name" in e]
    assert "not a CNI network name" in error
