"""Planning: chain -> cross-connections (sides, L2/L3, shared MAC and addresses), partial plans,
warnings, and the shipped examples."""

import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest
from model_builders import chain_doc, deployment_doc, nad_doc, valid_docs

from flexsfc.model import (
    ForeignNetwork,
    UnresolvedReason,
    chain_links,
    load_plan,
    parse_chain,
    parse_deployment,
    parse_nad,
    plan_chain,
)
from flexsfc.model.mac import derive_mac
from flexsfc.model.types import Mode, Side

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def test_plan_of_a_valid_chain(plan_of: Callable) -> None:
    plan = plan_of(valid_docs())
    assert [xc.name for xc in plan.cross_connections] == ["demo-a-b", "demo-b-c"]
    ab, bc = plan.cross_connections
    assert (ab.side_a.nf, ab.side_a.interface, ab.side_b.nf, ab.side_b.interface) == ("a", "eth1", "b", "in0")
    assert (bc.side(Side.A).nf, bc.side(Side.B).nf) == ("b", "c")
    assert ab.side_a.mode is Mode.L3 and ab.side_b.mode is Mode.L2 and bc.side_b.mode is Mode.L3
    assert ab.side_a.addresses == (ipaddress.ip_interface("10.0.0.1/24"),) and ab.side_b.addresses == ()
    assert ab.side_a.network == "a-eth1" and ab.namespace == "default" and ab.chain == "demo"
    assert plan.warnings == [] and plan.issues == []
    assert {d.nf: d.replicas for d in plan.deployments} == {"a": 1, "b": 3, "c": 1}


def test_side_a_is_the_nf_listed_first_whatever_the_link_order(plan_of: Callable) -> None:
    docs = valid_docs()
    docs[0] = chain_doc(
        [
            {"name": "c", "links": {"b": "eth1"}},
            {"name": "b", "links": {"c": "out0", "a": "in0"}},
            {"name": "a", "links": {"b": "eth1"}},
        ]
    )
    names = [(xc.name, xc.side_a.nf) for xc in plan_of(docs).cross_connections]
    assert names == [("demo-c-b", "c"), ("demo-b-a", "b")]


def test_mac_is_derived_stable_and_locally_administered_unicast(plan_of: Callable) -> None:
    first = plan_of(valid_docs()).cross_connections[0].side_a.mac
    second = plan_of(valid_docs()).cross_connections[0].side_a.mac
    assert first == second == derive_mac("a-eth1", "eth1")  # the function flexsfc-cni uses
    octet = int(first.split(":")[0], 16)
    assert octet & 0x02 and not octet & 0x01
    macs = {side.mac for xc in plan_of(valid_docs()).cross_connections for side in (xc.side_a, xc.side_b)}
    assert len(macs) == 4


def test_chain_settings_defaults_and_values(plan_of: Callable) -> None:
    docs = valid_docs()
    assert plan_of(docs).chains[0].settings.maglev_table_size == 16381
    docs[0]["spec"]["settings"] = {"maglevTableSize": 1021}
    assert plan_of(docs).chains[0].settings.maglev_table_size == 1021


def test_warnings_do_not_fail(plan_of: Callable) -> None:
    docs = [d for d in valid_docs() if d["metadata"]["name"] != "c" or d["kind"] != "Deployment"]
    docs.append(deployment_doc("orphan", "x@eth1"))
    docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}})
    plan = plan_of(docs)
    text = "\n".join(plan.warnings)
    assert "NF 'c': no Deployment in namespace 'default'" in text
    assert "NF 'orphan' is in no ServiceFunctionChain" in text
    assert "unknown kind v1/ConfigMap: skipped" in text
    assert [xc.name for xc in plan.cross_connections] == ["demo-a-b"]  # demo-b-c cannot be resolved


def test_unused_flexsfc_interface_is_a_warning(plan_of: Callable) -> None:
    docs = valid_docs()
    docs.append(nad_doc("a-spare"))
    docs[5] = deployment_doc("a", "a-eth1@eth1, a-spare@eth9")
    assert any("interface 'eth9' uses the flexsfc plugin" in w for w in plan_of(docs).warnings)


def test_duplicate_addresses_and_foreign_subnets(errors_of: Callable, plan_of: Callable) -> None:
    docs = valid_docs()
    docs[4] = nad_doc("c-eth1", "10.0.0.1/24")
    assert any("address 10.0.0.1 is on a:eth1 and c:eth1" in e for e in errors_of(docs))
    docs = valid_docs()
    docs[0] = chain_doc([{"name": "a", "links": {"c": "eth1"}}, {"name": "c", "links": {"a": "eth1"}}])
    docs[4] = nad_doc("c-eth1", "10.9.0.2/24")
    docs = [d for d in docs if d["metadata"]["name"] not in ("b", "b-in0", "b-out0")]
    assert any("share no subnet" in w for w in plan_of(docs).warnings)


def test_duplicate_object_names(errors_of: Callable) -> None:
    docs = [*valid_docs(), nad_doc("a-eth1", "10.0.0.1/24")]
    assert any(
        "NetworkAttachmentDefinition default/a-eth1" in e and "defined 2 times" in e for e in errors_of(docs)
    )


def test_plan_chain_with_partial_view() -> None:
    """What the chain controller sees on a cluster: a chain whose NADs/Deployments are partly missing."""
    docs = valid_docs()
    chain, issues = parse_chain(docs[0])
    assert chain is not None and issues == []
    deployments = [parse_deployment(d)[0] for d in docs[5:]]
    networks = [parse_nad(d)[0] for d in docs[1:4]]  # c-eth1 not seen yet
    result = plan_chain(chain, deployments, networks)
    assert [link.name for link in chain_links(chain)] == [link.name for link in result.links]
    assert [xc.name for xc in result.cross_connections] == ["demo-a-b"]
    (missing,) = result.unresolved
    assert (missing.cross_connection, missing.nf, missing.interface) == ("demo-b-c", "c", "eth1")
    assert missing.reason is UnresolvedReason.NO_ATTACHMENT and missing.network == "default/c-eth1"
    assert not result.complete

    nothing = plan_chain(chain, [], [])
    assert nothing.cross_connections == [] and len(nothing.unresolved) == 4
    assert {u.reason for u in nothing.unresolved} == {UnresolvedReason.NO_DEPLOYMENT}

    foreign = plan_chain(chain, deployments, [*networks, ForeignNetwork("c-eth1", "default", "macvlan")])
    assert [u.reason for u in foreign.unresolved] == [UnresolvedReason.WRONG_PLUGIN]


def test_deployments_of_other_namespaces_are_not_used(plan_of: Callable) -> None:
    docs = valid_docs()
    docs[7]["metadata"]["namespace"] = "elsewhere"
    plan = plan_of(docs)
    assert [xc.name for xc in plan.cross_connections] == ["demo-a-b"]
    assert any("NF 'c': no Deployment in namespace 'default'" in w for w in plan.warnings)


def test_load_plan_text_and_directory(tmp_path: Path, write_docs: Callable) -> None:
    path = write_docs(valid_docs())
    assert len(load_plan(path.parent).cross_connections) == 2


@pytest.mark.parametrize("example", ["transparent-firewall", "l3-chain"])
def test_examples_validate_with_a_coherent_plan(example: str) -> None:
    plan = load_plan(EXAMPLES / example)
    assert plan.issues == []
    (chain,) = plan.chains
    names = [nf.name for nf in chain.network_functions]
    assert (names[0], names[-1]) == ("client", "server")
    assert len(plan.cross_connections) == len(chain.network_functions) - 1
    for deployment in plan.deployments:
        container = deployment.pod_template["spec"]["containers"][0]
        assert "exec sleep infinity" in container["args"][0]
        assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    # Ends of an L2 stretch (and of every L3 link) share a subnet, so traffic can flow end to end.
    l3_sides = [s for xc in plan.cross_connections for s in (xc.side_a, xc.side_b) if s.mode is Mode.L3]
    assert l3_sides and all(s.addresses for s in l3_sides)


def test_transparent_firewall_example_is_l2_in_the_middle() -> None:
    plan = load_plan(EXAMPLES / "transparent-firewall")
    modes = {(s.nf, s.interface): s.mode for xc in plan.cross_connections for s in (xc.side_a, xc.side_b)}
    assert modes[("firewall", "eth1")] is Mode.L2 and modes[("firewall", "eth2")] is Mode.L2
    nat_out = next(xc.side_a for xc in plan.cross_connections if xc.side_a.nf == "nat")
    gw_in = next(xc.side_b for xc in plan.cross_connections if xc.side_b.nf == "gw")
    assert nat_out.addresses[0].network == gw_in.addresses[0].network
