"""The Kubernetes deployment set of flexsfc, generated: the files of deploy/ and their rendering.

`flexsfc manifests --write deploy` writes these files into deploy/ (the kustomize base deploy/base/,
deploy/kustomization.yaml naming it, and deploy/uninstall/), and a test fails when the committed files
differ from what this module generates, so the CRDs and the RBAC rules always match the code that uses
them. deploy/Dockerfile, deploy/overlays/, deploy/example/ and deploy/autoscaling/ are written by hand.

This module assembles the files (ManifestFile) and renders them; the objects come from
deploy_base (names, shared helpers), deploy_rbac (RBAC, peering) and deploy_workloads (the controller,
the agent DaemonSet, the quota, the node cleanup).
"""

from dataclasses import dataclass
from typing import Any

import yaml

from flexsfc.operator import crds
from flexsfc.operator.deploy_base import AGENT, BASE, CONTROLLER, GENERATED_HEADER, IMAGE, PART_OF
from flexsfc.operator.deploy_base import namespace as namespace
from flexsfc.operator.deploy_rbac import agent_namespace_rules, controller_namespace_rules, rbac
from flexsfc.operator.deploy_rbac import agent_rules as agent_rules
from flexsfc.operator.deploy_rbac import controller_rules as controller_rules
from flexsfc.operator.deploy_rbac import peering as peering
from flexsfc.operator.deploy_workloads import AGENT_CAPABILITIES as AGENT_CAPABILITIES
from flexsfc.operator.deploy_workloads import AGENT_HEALTH_PORT as AGENT_HEALTH_PORT
from flexsfc.operator.deploy_workloads import CNI_BIN_MOUNT as CNI_BIN_MOUNT
from flexsfc.operator.deploy_workloads import DEFAULT_CNI_BIN_DIR as DEFAULT_CNI_BIN_DIR
from flexsfc.operator.deploy_workloads import IMAGE_IPAM_PATH as IMAGE_IPAM_PATH
from flexsfc.operator.deploy_workloads import IMAGE_SHIM as IMAGE_SHIM
from flexsfc.operator.deploy_workloads import METRICS_PORT as METRICS_PORT
from flexsfc.operator.deploy_workloads import UNINSTALL_NAMESPACE
from flexsfc.operator.deploy_workloads import agent_daemonset as agent_daemonset
from flexsfc.operator.deploy_workloads import controller_deployment as controller_deployment
from flexsfc.operator.deploy_workloads import critical_pods_quota as critical_pods_quota
from flexsfc.operator.deploy_workloads import uninstall_daemonset as uninstall_daemonset


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the containers' shell scripts) as literal blocks, readable in deploy/."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(documents: list[dict[str, Any]]) -> str:
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, width=110)


@dataclass(frozen=True)
class ManifestFile:
    path: str  # relative to deploy/
    documents: list[dict[str, Any]]

    def render(self) -> str:
        return GENERATED_HEADER + _dump(self.documents)


def crd_files(prefix: str = BASE) -> list[ManifestFile]:
    chain, xc = crds.flexsfc_crds()
    return [
        ManifestFile(f"{prefix}crds/servicefunctionchains.yaml", [chain]),
        ManifestFile(f"{prefix}crds/crossconnections.yaml", [xc]),
        ManifestFile(f"{prefix}crds/kopf-peering.yaml", crds.kopf_peering_crds()),
    ]


def _kustomization(resources: list[str], *, images: bool = True) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
    }
    if images:
        document["images"] = [{"name": IMAGE.split(":")[0], "newTag": IMAGE.split(":")[1]}]
    return document


def deployment_files() -> list[ManifestFile]:
    """Every generated file of deploy/, in `kubectl apply` order (namespace and CRDs first).

    The set itself is the kustomize base deploy/base/; deploy/kustomization.yaml only names it, so
    that `kubectl apply -k deploy/` installs it and the overlays under deploy/overlays/ (which may not
    refer to a directory that contains them) build on deploy/base/ too.
    """
    files = [
        ManifestFile(f"{BASE}namespace.yaml", [namespace()]),
        ManifestFile(f"{BASE}resourcequota.yaml", [critical_pods_quota()]),
        *crd_files(),
        ManifestFile(
            f"{BASE}rbac-controller.yaml", rbac(CONTROLLER, controller_rules(), controller_namespace_rules())
        ),
        ManifestFile(f"{BASE}rbac-agent.yaml", rbac(AGENT, agent_rules(), agent_namespace_rules())),
        ManifestFile(f"{BASE}peering.yaml", [peering()]),
        ManifestFile(f"{BASE}controller.yaml", [controller_deployment()]),
        ManifestFile(f"{BASE}agent.yaml", [agent_daemonset()]),
    ]
    base = ManifestFile(
        f"{BASE}kustomization.yaml", [_kustomization([f.path.removeprefix(BASE) for f in files])]
    )
    top = ManifestFile("kustomization.yaml", [_kustomization([BASE.rstrip("/")], images=False)])
    return [*files, base, top, *uninstall_files()]


def uninstall_files() -> list[ManifestFile]:
    """deploy/uninstall/: `kubectl apply -k deploy/uninstall/` once the agent is gone (docs/kubernetes.md)."""
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": UNINSTALL_NAMESPACE, "labels": PART_OF},
    }
    files = [
        ManifestFile("uninstall/namespace.yaml", [ns]),
        ManifestFile("uninstall/node-cleanup.yaml", [uninstall_daemonset()]),
    ]
    kustomization = _kustomization([f.path.removeprefix("uninstall/") for f in files])
    return [*files, ManifestFile("uninstall/kustomization.yaml", [kustomization])]


def render_all(files: list[ManifestFile]) -> str:
    """One multi-document YAML stream (what `flexsfc manifests` prints)."""
    documents = [
        doc
        for f in files
        if not f.path.endswith("kustomization.yaml") and not f.path.startswith("uninstall/")
        for doc in f.documents
    ]
    return GENERATED_HEADER + _dump(documents)
