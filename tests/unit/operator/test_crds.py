"""The generated CRDs: structural, in sync with deploy/, accepting every example, rejecting what a
schema (plus CEL rules) can catch, and agreeing with the model's validator on each of those cases.

Schemas are checked with jsonschema and the CEL rules with cel-python (see crd_validation.py); the
real API server is not available here.
"""

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from crd_validation import cel_errors, crd_errors, structural_problems

from flexsfc.model import load_plan, validate_chain
from flexsfc.model.constants import MAX_IFNAME_LEN
from flexsfc.model.manifests import load_documents
from flexsfc.operator import crds, deployset

REPO = Path(__file__).parents[3]
CHAIN_SCHEMA = crds.crd_schema(crds.chain_crd())
XC_SCHEMA = crds.crd_schema(crds.cross_connection_crd())


def example_chains() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for folder in (REPO / "examples", REPO / "deploy" / "example"):
        if not folder.exists():
            continue
        documents, _ = load_documents(folder)
        found += [(d.source, d.obj) for d in documents if d.kind == "ServiceFunctionChain"]
    return found


def base_chain() -> dict[str, Any]:
    return {
        "apiVersion": "flexsfc.io/v1alpha1",
        "kind": "ServiceFunctionChain",
        "metadata": {"name": "demo", "namespace": "default"},
        "spec": {
            "networkFunctions": [
                {"name": "a", "links": {"b": "eth1"}},
                {"name": "b", "links": {"a": "eth1", "c": "eth2"}},
                {"name": "c", "links": {"b": "eth1"}},
            ]
        },
    }


def nfs(chain: dict[str, Any]) -> list[dict[str, Any]]:
    return chain["spec"]["networkFunctions"]


# Each invalid-chain class the schema can catch: (mutation, a word of the CRD's message).
INVALID: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "unknown neighbour": (
        lambda c: nfs(c)[2]["links"].update(ghost="eth5"),
        "network function of this chain",
    ),
    "asymmetric link": (lambda c: nfs(c)[0]["links"].update(c="eth2"), "symmetric"),
    "duplicate names": (lambda c: nfs(c).append({"name": "a", "links": {"b": "eth3"}}), "unique"),
    "interface name too long": (
        lambda c: nfs(c)[0]["links"].update(b="x" * (MAX_IFNAME_LEN + 1)),
        "is too long",
    ),
    "interface name with slash": (lambda c: nfs(c)[0]["links"].update(b="eth/1"), "does not match"),
    "interface name dot": (lambda c: nfs(c)[0]["links"].update(b=".."), "'.' or '..'"),
    "self link": (lambda c: nfs(c)[0]["links"].update(a="eth7"), "itself"),
    "one interface for two links": (lambda c: nfs(c)[1]["links"].update(c="eth1"), "own interface"),
    "NF name not a DNS label": (lambda c: nfs(c).__setitem__(0, {"name": "Bad_Name"}), "does not match"),
    "no network functions": (lambda c: c["spec"].update(networkFunctions=[]), "non-empty"),
    "missing networkFunctions": (lambda c: c["spec"].pop("networkFunctions"), "required"),
    "Maglev size not allowed": (
        lambda c: c["spec"].update(settings={"maglevTableSize": 1000}),
        "is not one of",
    ),
}


def test_crds_are_structural() -> None:
    for crd in crds.flexsfc_crds():
        assert structural_problems(crds.crd_schema(crd)) == []
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert crd["spec"]["names"]["shortNames"] and version["additionalPrinterColumns"]


def test_committed_deploy_files_match_the_generated_ones() -> None:
    """Drift: deploy/ must be exactly `flexsfc manifests --write deploy` of the current code."""
    for manifest in deployset.deployment_files():
        committed = REPO / "deploy" / manifest.path
        assert committed.exists(), f"{committed} missing: run `flexsfc manifests --write deploy`"
        assert committed.read_text(encoding="utf-8") == manifest.render(), (
            f"{committed} differs from the generated one: run `flexsfc manifests --write deploy`"
        )


def test_every_example_chain_is_accepted() -> None:
    chains = example_chains()
    assert chains, "no example ServiceFunctionChain found"
    for source, chain in chains:
        assert crd_errors(CHAIN_SCHEMA, chain) == [], source
        assert not [i for i in validate_chain(chain) if i.is_error], source


def test_cluster_example_is_a_complete_plan() -> None:
    plan = load_plan(REPO / "deploy" / "example")
    assert len(plan.cross_connections) == 2 and not plan.warnings


def test_base_chain_is_valid_for_both() -> None:
    assert crd_errors(CHAIN_SCHEMA, base_chain()) == []
    assert not [i for i in validate_chain(base_chain()) if i.is_error]


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_chain_class_is_rejected_by_crd_and_model(case: str) -> None:
    mutate, message = INVALID[case]
    chain = copy.deepcopy(base_chain())
    mutate(chain)
    errors = crd_errors(CHAIN_SCHEMA, chain)
    assert any(message in e for e in errors), errors
    assert [i for i in validate_chain(chain) if i.is_error], "the model accepts what the CRD rejects"


def test_nf_without_links_is_accepted_like_the_model_does() -> None:
    """The model only warns about a lone NF; the schema must not be stricter."""
    chain = base_chain()
    nfs(chain).append({"name": "lonely"})
    assert crd_errors(CHAIN_SCHEMA, chain) == []
    assert not [i for i in validate_chain(chain) if i.is_error]


def xc_object() -> dict[str, Any]:
    side = {
        "interface": "eth1",
        "network": "n",
        "mode": "L3",
        "mac": "02:00:00:00:00:01",
        "addresses": ["10.0.0.1/24"],
    }
    return {
        "apiVersion": "flexsfc.io/v1alpha1",
        "kind": "CrossConnection",
        "metadata": {"name": "demo-a-b"},
        "spec": {
            "chain": "demo",
            "sideA": dict(side, nf="a"),
            "sideB": dict(side, nf="b", mode="L2", addresses=[]),
        },
    }


def test_cross_connection_schema() -> None:
    assert crd_errors(XC_SCHEMA, xc_object()) == []
    l2_with_address = xc_object()
    l2_with_address["spec"]["sideB"]["addresses"] = ["10.0.0.9/24"]
    assert cel_errors(XC_SCHEMA, l2_with_address) == [".spec.sideB: an L2 side has no addresses"]
    same_nf = xc_object()
    same_nf["spec"]["sideB"]["nf"] = "a"
    assert crd_errors(XC_SCHEMA, same_nf) == [".spec: the two sides must be different NFs"]
    bad_mac = xc_object()
    bad_mac["spec"]["sideA"]["mac"] = "02:00"
    assert crd_errors(XC_SCHEMA, bad_mac)
