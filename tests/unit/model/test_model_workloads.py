"""Deployments and NetworkAttachmentDefinitions: both Multus annotation forms, NAD configs."""

import ipaddress
import json

import pytest
from model_builders import deployment_doc, nad_doc

from flexsfc.model import ForeignNetwork, parse_deployment, parse_nad, parse_networks_annotation
from flexsfc.model.errors import IssueCollector
from flexsfc.model.types import Mode, NetworkAttachment, NetworkSelection

PATH = "spec.template.metadata.annotations.k8s.v1.cni.cncf.io/networks"


def parse(value: str) -> tuple[list[NetworkSelection], list[str]]:
    report = IssueCollector("Deployment default/x")
    selections = parse_networks_annotation(value, PATH, report)
    return selections, [str(issue) for issue in report.issues]


def test_text_form() -> None:
    selections, errors = parse("fw-in@eth1, other/fw-out@eth2,plain, ns/bare")
    assert errors == []
    assert selections == [
        NetworkSelection("fw-in", "eth1", None),
        NetworkSelection("fw-out", "eth2", "other"),
        NetworkSelection("plain", "net3"),  # Multus' default name by position
        NetworkSelection("bare", "net4", "ns"),
    ]


def test_json_form() -> None:
    value = json.dumps(
        [
            {"name": "fw-in", "interface": "eth1"},
            {"name": "fw-out", "namespace": "other", "interface": "eth2"},
        ]
    )
    selections, errors = parse(value)
    assert errors == []
    assert selections == [NetworkSelection("fw-in", "eth1"), NetworkSelection("fw-out", "eth2", "other")]


def test_json_form_without_interface_is_an_error() -> None:
    selections, errors = parse('[{"name": "fw-in"}]')
    assert selections == []
    (message,) = errors
    assert f"{PATH}[0].interface" in message and 'Fix: add "interface": "eth1"' in message


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("[{", "invalid JSON"),
        ("a@eth1,,b@eth2", "entry 1 is empty"),
        ("a@eth1, b@eth1", "attached twice"),
        ("a@this-name-is-too-long", "Linux allows at most 15"),
        ("ns/@eth1", "names no network"),
    ],
)
def test_bad_annotations(value: str, fragment: str) -> None:
    _, errors = parse(value)
    assert len(errors) == 1 and fragment in errors[0] and PATH in errors[0] and "Fix:" in errors[0]


def test_nf_deployment_keeps_pod_template_and_defaults_replicas() -> None:
    doc = deployment_doc("fw", "fw-in@eth1")
    del doc["spec"]["replicas"]
    deployment, issues = parse_deployment(doc)
    assert issues == [] and deployment is not None
    assert deployment.replicas == 1 and deployment.nf == "fw" and deployment.namespace == "default"
    assert deployment.pod_template["spec"]["containers"][0]["image"] == "nf-tools"


def test_deployment_without_nf_label_is_not_an_nf() -> None:
    doc = deployment_doc("fw", "fw-in@eth1")
    doc["spec"]["template"]["metadata"]["labels"] = {"app": "web"}
    assert parse_deployment(doc) == (None, [])


@pytest.mark.parametrize("replicas", [-1, "3", True, 1.5])
def test_bad_replicas(replicas: object) -> None:
    deployment, issues = parse_deployment(deployment_doc("fw", "fw-in@eth1", replicas=replicas))
    assert deployment is None and [i.path for i in issues] == ["spec.replicas"]


def test_l2_and_l3_attachments() -> None:
    l2, _ = parse_nad(nad_doc("fw-in"))
    l3, _ = parse_nad(nad_doc("gw-out", "10.0.0.1/24", mtu=9000))
    v6, _ = parse_nad(nad_doc("gw6", "fd00::1/64"))
    assert isinstance(l2, NetworkAttachment) and l2.mode is Mode.L2 and l2.addresses == ()
    assert isinstance(l3, NetworkAttachment) and l3.mode is Mode.L3 and l3.mtu == 9000
    assert l3.addresses == (ipaddress.ip_interface("10.0.0.1/24"),)
    assert isinstance(v6, NetworkAttachment) and v6.addresses == (ipaddress.ip_interface("fd00::1/64"),)
    assert l3.mac_generation_string == "gw-out"


def test_plugin_inside_a_config_list() -> None:
    doc = nad_doc("x")
    plugin = json.loads(doc["spec"]["config"])
    doc["spec"]["config"] = json.dumps({"cniVersion": "1.0.0", "name": "x", "plugins": [plugin]})
    attachment, issues = parse_nad(doc)
    assert issues == [] and isinstance(attachment, NetworkAttachment)
    assert attachment.config["cniVersion"] == "1.0.0" and attachment.config["name"] == "x"


def test_foreign_attachment_is_kept_for_precise_errors() -> None:
    attachment, issues = parse_nad(nad_doc("mgmt", type="macvlan"))
    assert issues == [] and attachment == ForeignNetwork("mgmt", "default", "macvlan")


@pytest.mark.parametrize(
    ("config", "path", "fix"),
    [
        ({"macGenerationString": ""}, "spec.config.macGenerationString", 'add "macGenerationString"'),
        ({"ipam": {"type": "host-local"}}, "spec.config.ipam.type", "only the 'static' IPAM"),
        ({"ipam": {"type": "static", "addresses": []}}, "spec.config.ipam.addresses", "at least one"),
        (
            {"ipam": {"type": "static", "addresses": [{"address": "10.0.0.1"}]}},
            "addresses[0].address",
            "CIDR",
        ),
        (
            {"ipam": {"type": "static", "addresses": [{"address": "10.0.0.1/24"}], "routes": [{"gw": "1"}]}},
            "spec.config.ipam.routes[0]",
            "not a valid route",
        ),
        ({"mtu": 20}, "spec.config.mtu", "68..65535"),
    ],
)
def test_bad_attachment_configs(config: dict, path: str, fix: str) -> None:
    attachment, issues = parse_nad(nad_doc("x", **config))
    assert attachment is None
    (issue,) = issues
    assert issue.path.endswith(path) and (fix in issue.fix or fix in issue.message)


def test_invalid_config_json() -> None:
    doc = nad_doc("x")
    doc["spec"]["config"] = "{not json"
    attachment, (issue,) = parse_nad(doc)
    assert attachment is None and issue.path == "spec.config" and "invalid JSON" in issue.message
