"""CustomResourceDefinitions generated from the model: ServiceFunctionChain and CrossConnection.

The schemas are built from the model's constants (API group, allowed Maglev sizes, interface name
length), so the CRDs cannot drift from what `flexsfc validate` accepts; deploy/base/crds/ holds the output
of `flexsfc manifests --crds` and a test fails when the two differ.

What a structural schema can express is checked by the API server itself (types, patterns, lengths,
enums); the cross-object rules of a chain (neighbours exist, links are symmetric, no self links,
unique names) are CEL rules in `x-kubernetes-validations`. Everything else (NetworkAttachmentDefinitions,
Deployments) only the chain controller can check, and it reports those as status conditions.

The spec and status schemas are in flexsfc.operator.crd_schemas; this module wraps them into the
CRDs (names, printer columns, the status subresource) with Kopf's peering CRDs beside them.
"""

from typing import Any, Final

from flexsfc.model.constants import (
    API_GROUP,
    API_VERSION,
    KIND_CHAIN,
    KIND_CROSS_CONNECTION,
    PLURAL_CHAIN,
    PLURAL_CROSS_CONNECTION,
)
from flexsfc.operator.crd_schemas import (
    chain_spec_schema,
    chain_status_schema,
    cross_connection_spec_schema,
    cross_connection_status_schema,
)

SHORT_NAME_CHAIN: Final = "sfc"
SHORT_NAME_CROSS_CONNECTION: Final = "xc"
CATEGORY: Final = "flexsfc"


def _crd(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_name: str,
    description: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{API_GROUP}", "labels": {"app.kubernetes.io/part-of": "flexsfc"}},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": [short_name],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def _age_column() -> dict[str, Any]:
    return {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def chain_crd() -> dict[str, Any]:
    return _crd(
        kind=KIND_CHAIN,
        plural=PLURAL_CHAIN,
        singular=KIND_CHAIN.lower(),
        short_name=SHORT_NAME_CHAIN,
        description="A Service Function Chain: network functions and the links between them.",
        spec=chain_spec_schema(),
        status=chain_status_schema(),
        columns=[
            {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
            {
                "name": "Reason",
                "type": "string",
                "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            },
            {"name": "Links", "type": "integer", "jsonPath": ".status.links"},
            _age_column(),
        ],
    )


def cross_connection_crd() -> dict[str, Any]:
    return _crd(
        kind=KIND_CROSS_CONNECTION,
        plural=PLURAL_CROSS_CONNECTION,
        singular=KIND_CROSS_CONNECTION.lower(),
        short_name=SHORT_NAME_CROSS_CONNECTION,
        description="One link of a chain, kept by the chain controller and programmed by every node agent.",
        spec=cross_connection_spec_schema(),
        status=cross_connection_status_schema(),
        columns=[
            {"name": "Chain", "type": "string", "jsonPath": ".spec.chain"},
            {"name": "A", "type": "string", "jsonPath": ".spec.sideA.nf"},
            {"name": "A-If", "type": "string", "jsonPath": ".spec.sideA.interface"},
            {"name": "B", "type": "string", "jsonPath": ".spec.sideB.nf"},
            {"name": "B-If", "type": "string", "jsonPath": ".spec.sideB.interface"},
            {"name": "Mode", "type": "string", "jsonPath": ".spec.sideA.mode", "priority": 1},
            _age_column(),
        ],
    )


def kopf_peering_crds() -> list[dict[str, Any]]:
    """Kopf's peering resources (kopf.dev/v1): the controller's replicas elect one active instance."""
    crds = []
    for kind, scope in (("ClusterKopfPeering", "Cluster"), ("KopfPeering", "Namespaced")):
        plural = kind.lower() + "s"
        crds.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.kopf.dev"},
                "spec": {
                    "scope": scope,
                    "group": "kopf.dev",
                    "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                    "versions": [
                        {
                            "name": "v1",
                            "served": True,
                            "storage": True,
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "properties": {
                                        "status": {
                                            "type": "object",
                                            "x-kubernetes-preserve-unknown-fields": True,
                                        }
                                    },
                                }
                            },
                        }
                    ],
                },
            }
        )
    return crds


def flexsfc_crds() -> list[dict[str, Any]]:
    return [chain_crd(), cross_connection_crd()]


def crd_schema(crd: dict[str, Any]) -> dict[str, Any]:
    """The openAPIV3Schema of a CRD's (only) version."""
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema
