"""Builders for small manifest sets: a valid 3-NF chain (L3 - L2 - L3) that tests then break.

A plain module (not conftest) so test files import it by a name no other test directory uses.
"""

import json
from typing import Any

Docs = list[dict[str, Any]]


def chain_doc(nfs: list[dict[str, Any]], name: str = "demo", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flexsfc.io/v1alpha1",
        "kind": "ServiceFunctionChain",
        "metadata": {"name": name},
        "spec": {"networkFunctions": nfs, **spec},
    }


def nad_doc(name: str, address: str | None = None, **config: Any) -> dict[str, Any]:
    cni: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": name,
        "type": "flexsfc-cni",
        "macGenerationString": name,
    }
    if address is not None:
        cni["ipam"] = {"type": "static", "addresses": [{"address": address}]}
    cni.update(config)
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name},
        "spec": {"config": json.dumps(cni)},
    }


def deployment_doc(nf: str, networks: str, replicas: Any = 1) -> dict[str, Any]:
    label = {"flexsfc.io/network-function": nf}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": nf},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(label)},
            "template": {
                "metadata": {"labels": dict(label), "annotations": {"k8s.v1.cni.cncf.io/networks": networks}},
                "spec": {"containers": [{"name": nf, "image": "nf-tools", "command": ["sleep", "infinity"]}]},
            },
        },
    }


def valid_docs() -> Docs:
    """Chain demo: a (L3 10.0.0.1) -- b (L2 bump in the wire) -- c (L3 10.0.0.2)."""
    return [
        chain_doc(
            [
                {"name": "a", "links": {"b": "eth1"}},
                {"name": "b", "links": {"a": "in0", "c": "out0"}},
                {"name": "c", "links": {"b": "eth1"}},
            ]
        ),
        nad_doc("a-eth1", "10.0.0.1/24"),
        nad_doc("b-in0"),
        nad_doc("b-out0"),
        nad_doc("c-eth1", "10.0.0.2/24"),
        deployment_doc("a", "a-eth1@eth1"),
        deployment_doc("b", "b-in0@in0, b-out0@out0", replicas=3),
        deployment_doc("c", "c-eth1@eth1"),
    ]
