"""Every manifest under deploy/ and examples/ validates against the Kubernetes schemas.

Built-in kinds: kubernetes-validate (the API server's OpenAPI schemas, strict: unknown fields fail).
Our own CRD instances (flexsfc.io, kopf.dev): against the generated CRD schemas. Third-party custom
resources that have no published schema here (Multus NetworkAttachmentDefinition, prometheus-operator
ServiceMonitor, kustomize Kustomization): their object structure is checked, and NADs are parsed by
the model. Documents without apiVersion/kind (e.g. Helm values files) are not Kubernetes objects.
"""

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from crd_validation import crd_errors

from flexsfc.model import parse_nad
from flexsfc.operator import crds, deployset
from flexsfc.operator.deploy_rbac import controller_namespace_rules, rbac

REPO = Path(__file__).parents[3]
KUBERNETES_VERSION = "1.31.0"
OWN_SCHEMAS = {
    (crd["spec"]["group"], crd["spec"]["names"]["kind"]): crds.crd_schema(crd)
    for crd in crds.flexsfc_crds() + crds.kopf_peering_crds()
}
THIRD_PARTY_KINDS = {
    ("k8s.cni.cncf.io", "NetworkAttachmentDefinition"),
    ("monitoring.coreos.com", "ServiceMonitor"),
    ("monitoring.coreos.com", "PrometheusRule"),
    ("kustomize.config.k8s.io", "Kustomization"),
}


def manifest_documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for root in (REPO / "deploy", REPO / "examples"):
        for path in sorted(root.rglob("*.y*ml")):
            for index, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
                if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
                    found.append((f"{path.relative_to(REPO)}#{index}", doc))
    return found


DOCUMENTS = manifest_documents()


def test_the_deployment_set_is_found() -> None:
    kinds = {doc["kind"] for _, doc in DOCUMENTS}
    assert {
        "CustomResourceDefinition",
        "DaemonSet",
        "Deployment",
        "ClusterRole",
        "ServiceFunctionChain",
    } <= kinds


@pytest.mark.parametrize("where", [w for w, _ in DOCUMENTS])
def test_manifest_validates(where: str) -> None:
    doc = dict(DOCUMENTS)[where]
    group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
    key = (group, doc["kind"])
    if key in OWN_SCHEMAS:
        assert crd_errors(OWN_SCHEMAS[key], doc) == []
    elif key in THIRD_PARTY_KINDS:
        assert isinstance(doc.get("metadata", {}).get("name"), str) or doc["kind"] == "Kustomization"
        if doc["kind"] == "NetworkAttachmentDefinition":
            network, issues = parse_nad(doc)
            assert network is not None and not [i for i in issues if i.is_error], issues
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_rbac_is_least_privilege() -> None:
    """The agent may write nothing but CrossConnection status; neither component touches pods' specs."""
    agent_writes = {
        (group, resource)
        for rule in deployset.agent_rules()
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        if set(rule["verbs"]) - {"get", "list", "watch"}
    }
    assert agent_writes == {
        ("flexsfc.io", "crossconnections/status"),
        ("", "events"),
        ("events.k8s.io", "events"),
    }
    for rules in (deployset.agent_rules(), deployset.controller_rules()):
        for rule in rules:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"]
            if "pods" in rule["resources"]:
                assert set(rule["verbs"]) <= {"get", "list", "watch"}


def test_agent_daemonset_has_what_the_data_plane_needs() -> None:
    pod = deployset.agent_daemonset()["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    (agent,) = pod["containers"]
    # Capabilities instead of privileged (docs/kubernetes.md, "Privileges"; tests/unit/deploy/).
    assert agent["securityContext"]["privileged"] is False
    assert {"NET_ADMIN", "SYS_ADMIN"} <= set(agent["securityContext"]["capabilities"]["add"])
    mounts = {m["mountPath"] for m in agent["volumeMounts"]}
    assert {"/sys/fs/bpf", "/run/netns", "/var/lib/flexsfc", "/run/flexsfc"} <= mounts
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in agent["env"]
    installers = [c for c in pod["initContainers"] if c["name"] == "install-cni"]
    (installer,) = installers
    assert [m["mountPath"] for m in installer["volumeMounts"]] == [deployset.CNI_BIN_MOUNT]


def test_multinode_rbac_grows_only_by_reads_of_nodes_and_the_agents_leases() -> None:
    """The agent reads Nodes (their InternalIP) and every node's NF pods; the controller reads the
    agents' Leases by name, in the agents' namespace only."""
    agent_reads = {
        resource
        for rule in deployset.agent_rules()
        if rule["apiGroups"] == [""] and set(rule["verbs"]) == {"get", "list", "watch"}
        for resource in rule["resources"]
    }
    assert {"pods", "nodes"} <= agent_reads
    controller = rbac("flexsfc-controller", deployset.controller_rules(), controller_namespace_rules())
    (role,) = [doc for doc in controller if doc["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "flexsfc-system"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}
    ]
    assert not any(
        "leases" in rule["resources"] for rule in deployset.controller_rules()
    )  # never cluster-wide
