"""The RBAC of the generated deployment set: least-privilege rules of the chain controller and the
node agent, the ServiceAccount / (Cluster)Role / (Cluster)RoleBinding objects, and Kopf's peering."""

from typing import Any, Final

from flexsfc.model.constants import API_GROUP, PLURAL_CHAIN, PLURAL_CROSS_CONNECTION
from flexsfc.operator.deploy_base import NAD_GROUP, NAMESPACE, PART_OF, PEERING_NAME, component_labels


def _rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


# Kopf itself: discovers resources, posts Events, watches namespaces for cluster-wide operation.
_KOPF_RULES: Final = [
    _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], ["get", "list", "watch"]),
    _rule([""], ["namespaces"], ["get", "list", "watch"]),
    _rule(["", "events.k8s.io"], ["events"], ["create", "patch"]),
]


def controller_rules() -> list[dict[str, Any]]:
    """Least privilege of the chain controller: it reads chains and their NF objects, owns xcs."""
    return [
        *_KOPF_RULES,
        # Kopf records its progress in annotations on the chain; status is written via /status.
        _rule([API_GROUP], [PLURAL_CHAIN], ["get", "list", "watch", "patch"]),
        _rule([API_GROUP], [f"{PLURAL_CHAIN}/status"], ["get", "patch", "update"]),
        # blockOwnerDeletion on the xcs' ownerReferences needs update on the owner's finalizers.
        _rule([API_GROUP], [f"{PLURAL_CHAIN}/finalizers"], ["update"]),
        _rule([API_GROUP], [PLURAL_CROSS_CONNECTION], ["get", "list", "watch", "create", "patch", "delete"]),
        _rule(["apps"], ["deployments"], ["get", "list", "watch"]),
        _rule([NAD_GROUP], ["network-attachment-definitions"], ["get", "list", "watch"]),
        # Readiness: where the NF pods run, which nodes still exist; pruning of the agents' entries.
        _rule([""], ["pods", "nodes"], ["get", "list", "watch"]),
        _rule([API_GROUP], [f"{PLURAL_CROSS_CONNECTION}/status"], ["patch"]),
        # One active controller among the replicas (Kopf peering).
        _rule(["kopf.dev"], ["clusterkopfpeerings"], ["get", "list", "watch", "patch"]),
    ]


def agent_rules() -> list[dict[str, Any]]:
    """Least privilege of the node agent: reads pods and xcs, writes only the xcs' status."""
    return [
        *_KOPF_RULES,
        # The NF pods of every node, and the nodes' InternalIP: a chain's replicas on other nodes
        # are reached through the tunnel to their node (docs/kubernetes.md, "Multi-node").
        _rule([""], ["pods"], ["get", "list", "watch"]),
        _rule([""], ["nodes"], ["get", "list", "watch"]),
        _rule([API_GROUP], [PLURAL_CROSS_CONNECTION], ["get", "list", "watch"]),
        _rule([API_GROUP], [f"{PLURAL_CROSS_CONNECTION}/status"], ["get", "patch"]),
    ]


def agent_namespace_rules() -> list[dict[str, Any]]:
    """The agent's heartbeat Lease, in its own namespace only (a Role: never other namespaces'
    leases, which hold other components' leader elections)."""
    return [_rule(["coordination.k8s.io"], ["leases"], ["get", "create", "update", "patch"])]


def controller_namespace_rules() -> list[dict[str, Any]]:
    """The agents' heartbeat Leases, read (by name) in the agents' namespace only: a node hosting NF
    replicas without a live agent keeps its chains from Ready."""
    return [_rule(["coordination.k8s.io"], ["leases"], ["get"])]


def rbac(
    component: str, rules: list[dict[str, Any]], namespace_rules: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    labels = component_labels(component)
    namespaced: list[dict[str, Any]] = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": component, "namespace": NAMESPACE, "labels": labels},
            "rules": namespace_rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": component, "namespace": NAMESPACE, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": component},
            "subjects": [{"kind": "ServiceAccount", "name": component, "namespace": NAMESPACE}],
        },
    ]
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": component, "namespace": NAMESPACE, "labels": labels},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": component, "labels": labels},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": component, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": component},
            "subjects": [{"kind": "ServiceAccount", "name": component, "namespace": NAMESPACE}],
        },
        *(namespaced if namespace_rules else []),
    ]


def peering() -> dict[str, Any]:
    return {
        "apiVersion": "kopf.dev/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": PEERING_NAME, "labels": PART_OF},
    }
