"""Every validation error class: the message names the object, the field path and the fix."""

from collections.abc import Callable
from pathlib import Path

import pytest
from model_builders import Docs, chain_doc, deployment_doc, nad_doc, valid_docs

from flexsfc.model import ManifestError, load_plan, validate_chain

Errors = Callable[[Docs], list[str]]


def one_error(errors: list[str], *fragments: str) -> str:
    matching = [e for e in errors if all(f in e for f in fragments)]
    assert len(matching) == 1, f"expected one error with {fragments}, got {errors}"
    return matching[0]


def with_nfs(nfs: list[dict]) -> Docs:
    docs = valid_docs()
    docs[0] = chain_doc(nfs)
    return docs


def test_unknown_link_target(errors_of: Errors) -> None:
    docs = with_nfs(
        [
            {"name": "a", "links": {"b": "eth1", "ghost": "eth2"}},
            {"name": "b", "links": {"a": "in0", "c": "out0"}},
            {"name": "c", "links": {"b": "eth1"}},
        ]
    )
    message = one_error(errors_of(docs), "unknown NF 'ghost'")
    assert "ServiceFunctionChain default/demo" in message
    assert "spec.networkFunctions[0].links.ghost" in message
    assert "Fix: add 'ghost' to spec.networkFunctions" in message


def test_asymmetric_link(errors_of: Errors) -> None:
    docs = with_nfs(
        [
            {"name": "a", "links": {"b": "eth1"}},
            {"name": "b", "links": {"c": "out0"}},
            {"name": "c", "links": {"b": "eth1"}},
        ]
    )
    message = one_error(errors_of(docs), "asymmetric link")
    assert "spec.networkFunctions[0].links.b" in message
    assert "Fix: add 'a: <interface>' to the links of 'b'" in message


def test_duplicate_nf_names(errors_of: Errors) -> None:
    docs = with_nfs(
        [
            {"name": "a", "links": {"b": "eth1"}},
            {"name": "b", "links": {"a": "in0", "c": "out0"}},
            {"name": "c", "links": {"b": "eth1"}},
            {"name": "a", "links": {}},
        ]
    )
    message = one_error(errors_of(docs), "duplicate NF name 'a'")
    assert "spec.networkFunctions[3].name" in message and "spec.networkFunctions[0]" in message
    assert "Fix: give every NF of the chain a distinct name" in message


def test_self_link(errors_of: Errors) -> None:
    docs = with_nfs(
        [
            {"name": "a", "links": {"b": "eth1", "a": "eth2"}},
            {"name": "b", "links": {"a": "in0", "c": "out0"}},
            {"name": "c", "links": {"b": "eth1"}},
        ]
    )
    message = one_error(errors_of(docs), "links to itself")
    assert "spec.networkFunctions[0].links.a" in message and "Fix: remove the self link" in message


def test_interface_used_for_two_links(errors_of: Errors) -> None:
    docs = with_nfs(
        [
            {"name": "a", "links": {"b": "eth1"}},
            {"name": "b", "links": {"a": "in0", "c": "in0"}},
            {"name": "c", "links": {"b": "eth1"}},
        ]
    )
    message = one_error(errors_of(docs), "already used for the link to 'a'")
    assert "spec.networkFunctions[1].links.c" in message
    assert "Fix: give each link its own interface" in message


@pytest.mark.parametrize(
    ("ifname", "problem"),
    [
        ("", "must not be empty"),
        ("x" * 16, "is 16 characters long, Linux allows at most 15"),
        ("eth/1", "must not contain '/'"),
        ("eth 1", "whitespace"),
    ],
)
def test_invalid_interface_name(errors_of: Errors, ifname: str, problem: str) -> None:
    docs = with_nfs(
        [
            {"name": "a", "links": {"b": ifname}},
            {"name": "b", "links": {"a": "in0", "c": "out0"}},
            {"name": "c", "links": {"b": "eth1"}},
        ]
    )
    errors = errors_of(docs)
    message = one_error(errors, problem)
    assert "spec.networkFunctions[0].links.b" in message and "Fix: use a Linux interface name" in message
    assert not any("asymmetric" in e for e in errors)  # reported once, not as a follow-up error


def test_bad_interface_towards_unknown_nf_reports_both(errors_of: Errors) -> None:
    docs = valid_docs()
    docs[0]["spec"]["networkFunctions"][0]["links"]["ghost"] = "eth/2"
    errors = errors_of(docs)
    one_error(errors, "spec.networkFunctions[0].links.ghost", "must not contain '/'")
    one_error(errors, "spec.networkFunctions[0].links.ghost", "unknown NF 'ghost'")


def test_max_length_interface_name_is_valid(plan_of: Callable) -> None:
    docs = valid_docs()
    docs[0]["spec"]["networkFunctions"][0]["links"]["b"] = "e" * 15
    docs[5] = deployment_doc("a", f"a-eth1@{'e' * 15}")
    assert plan_of(docs).cross_connections[0].side_a.interface == "e" * 15


def test_interface_without_network_attachment(errors_of: Errors) -> None:
    docs = valid_docs()
    docs[6] = deployment_doc("b", "b-in0@in0")  # out0 not attached
    message = one_error(errors_of(docs), "interface 'out0' has no NetworkAttachmentDefinition")
    assert "ServiceFunctionChain default/demo" in message and "spec.networkFunctions[1].links" in message
    assert "Fix: add '<nad-name>@out0' to the pod template annotation k8s.v1.cni.cncf.io/networks" in message


def test_missing_network_attachment_definition(errors_of: Errors) -> None:
    docs = [d for d in valid_docs() if d["metadata"]["name"] != "c-eth1"]
    message = one_error(errors_of(docs), "default/c-eth1, which does not exist")
    assert "Fix: create it (type flexsfc-cni)" in message


def test_network_attachment_of_another_plugin(errors_of: Errors) -> None:
    docs = valid_docs()
    docs[4] = nad_doc("c-eth1", "10.0.0.2/24", type="macvlan")
    message = one_error(errors_of(docs), "uses CNI plugin 'macvlan'")
    assert 'Fix: set "type": "flexsfc-cni"' in message


def test_negative_replicas(errors_of: Errors) -> None:
    docs = valid_docs()
    docs[6] = deployment_doc("b", "b-in0@in0, b-out0@out0", replicas=-1)
    message = one_error(errors_of(docs), "-1 is not a replica count")
    assert "Deployment default/b" in message and "spec.replicas" in message
    assert "Fix: use an integer >= 0" in message


def test_invalid_yaml_reports_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: v1\nkind: X\n---\nmetadata:\n  name: [unclosed\n  other: 1\n")
    with pytest.raises(ManifestError) as caught:
        load_plan(path)
    (issue,) = caught.value.errors
    assert issue.obj.startswith(f"{path}:6:")  # the line where the parser gave up
    assert "invalid YAML" in issue.message and "fix the YAML syntax" in issue.fix


def test_invalid_yaml_in_one_file_still_reports_other_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("key: [\n")
    (tmp_path / "b.yaml").write_text(
        "apiVersion: flexsfc.io/v1alpha1\nkind: ServiceFunctionChain\nmetadata: {}\n"
    )
    with pytest.raises(ManifestError) as caught:
        load_plan(tmp_path)
    text = str(caught.value)
    assert "a.yaml:2" in text and "invalid YAML" in text
    assert "b.yaml:1" in text and "metadata.name: missing required field" in text


@pytest.mark.parametrize(
    ("mutate", "path", "fix"),
    [
        (lambda d: d["metadata"].pop("name"), "metadata.name", "give the chain a name"),
        (lambda d: d.pop("spec"), "spec", "add spec.networkFunctions"),
        (lambda d: d["spec"].pop("networkFunctions"), "spec.networkFunctions", "list the chain's NFs"),
        (lambda d: d["spec"]["networkFunctions"][0].pop("name"), "spec.networkFunctions[0].name", "name the"),
        (lambda d: d.update(apiVersion="v1"), "apiVersion", "set apiVersion: flexsfc.io/v1alpha1"),
    ],
)
def test_missing_required_chain_fields(mutate: Callable, path: str, fix: str) -> None:
    chain = valid_docs()[0]
    mutate(chain)
    errors = [str(issue) for issue in validate_chain(chain) if issue.is_error]
    assert any(f" {path}: " in e and f"Fix: {fix}" in e for e in errors), errors


def test_missing_required_workload_fields(errors_of: Errors) -> None:
    docs = valid_docs()
    docs[1]["metadata"].pop("name")  # a NAD
    docs[2] = nad_doc("b-in0")
    docs[2]["spec"]["config"] = docs[2]["spec"]["config"].replace('"macGenerationString": "b-in0"', '"x": 1')
    docs[7]["spec"].pop("selector")
    errors = errors_of(docs)
    one_error(errors, "NetworkAttachmentDefinition default/<unnamed>", "metadata.name", "missing required")
    one_error(errors, "NetworkAttachmentDefinition default/b-in0", "spec.config.macGenerationString")
    one_error(errors, "Deployment default/c", "spec.selector.matchLabels", "Fix: add spec.selector")
    assert not any("b-in0, which does not exist" in e for e in errors)  # no follow-up of the NAD's error


def test_all_errors_reported_at_once(errors_of: Errors) -> None:
    docs = with_nfs(
        [
            {"name": "a", "links": {"a": "eth1"}},
            {"name": "b", "links": {"a": "in0", "zz": "out0"}},
            {"name": "b"},
        ]
    )
    docs[6] = deployment_doc("b", "b-in0@in0, b-out0@out0", replicas=-2)
    errors = errors_of(docs)
    for fragment in ("links to itself", "unknown NF 'zz'", "duplicate NF name 'b'", "-2 is not a replica"):
        one_error(errors, fragment)


@pytest.mark.parametrize(
    ("settings", "path"),
    [
        ({"maglevTableSize": 1000}, "spec.settings.maglevTableSize"),
        ({"sessionTimeout": 5}, "spec.settings.sessionTimeout"),
    ],
)
def test_bad_settings(settings: dict, path: str) -> None:
    chain = valid_docs()[0]
    chain["spec"]["settings"] = settings
    (issue,) = [i for i in validate_chain(chain) if i.is_error]
    assert issue.path == path and issue.fix


def test_invalid_chain_and_nf_names() -> None:
    chain = chain_doc([{"name": "Bad_Name", "links": {}}], name="Demo")
    paths = {issue.path for issue in validate_chain(chain) if issue.is_error}
    assert paths == {"metadata.name", "spec.networkFunctions[0].name"}


def test_valid_chain_has_no_issues() -> None:
    assert validate_chain(valid_docs()[0]) == []
