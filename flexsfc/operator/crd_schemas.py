"""The OpenAPI v3 schemas of the CRDs' spec and status, built from the model's constants.

flexsfc.operator.crds wraps them into the ServiceFunctionChain and CrossConnection
CustomResourceDefinitions. What a structural schema can express (types, patterns, lengths, enums) the
API server checks itself; the cross-object rules of a chain are the CEL rules in
`x-kubernetes-validations` here.
"""

from typing import Any, Final

from flexsfc.model.constants import (
    ALLOWED_MAGLEV_TABLE_SIZES,
    DEFAULT_MAGLEV_TABLE_SIZE,
    DEFAULT_SESSION_TIMEOUTS,
    MAX_IFNAME_LEN,
    MAX_SESSION_TIMEOUT,
)

# Bounds keep the CEL rules' worst-case cost under the API server's budget (it rejects CRDs whose
# rules could be too expensive on unbounded lists). Real chains are far smaller.
MAX_NETWORK_FUNCTIONS: Final = 64
MAX_LINKS_PER_NF: Final = 16
MAX_ADDRESSES: Final = 16
MAX_NAME_LEN: Final = 63

DNS_LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Linux accepts any bytes but '/', ':' and whitespace in an interface name, and not "." or "..".
IFNAME_PATTERN: Final = r"^[^/:\s]+$"
MAC_PATTERN: Final = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"


def _ifname_schema(description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "description": description,
        "minLength": 1,
        "maxLength": MAX_IFNAME_LEN,
        "pattern": IFNAME_PATTERN,
        "x-kubernetes-validations": [
            {"rule": "self != '.' && self != '..'", "message": "interface name cannot be '.' or '..'"}
        ],
    }


def _nf_name_schema(description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "description": description,
        "minLength": 1,
        "maxLength": MAX_NAME_LEN,
        "pattern": DNS_LABEL_PATTERN,
    }


def _settings_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Data-plane settings of the chain's cross-connections.",
        "properties": {
            "maglevTableSize": {
                "type": "integer",
                "description": "Slots per Maglev table: a prime, at least 100 x the largest replica count.",
                "enum": list(ALLOWED_MAGLEV_TABLE_SIZES),
                "default": DEFAULT_MAGLEV_TABLE_SIZE,
            },
            "sessionTimeouts": {
                "type": "object",
                "description": "Seconds a confirmed session (traffic seen both ways) may stay idle before "
                "the node agent frees it, per protocol class.",
                "additionalProperties": False,
                "properties": {
                    cls: {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_SESSION_TIMEOUT,
                        "default": seconds,
                        "description": _TIMEOUT_CLASSES[cls],
                    }
                    for cls, seconds in DEFAULT_SESSION_TIMEOUTS.items()
                },
            },
        },
    }


_TIMEOUT_CLASSES = {
    "tcp": "TCP and SCTP.",
    "udp": "UDP.",
    "icmp": "ICMP, ICMPv6 and ARP.",
    "other": "Any other IP protocol.",
}


def _conditions_schema() -> dict[str, Any]:
    """metav1.Condition, as Kubernetes API conventions define it."""
    return {
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": {"type": "string", "maxLength": 316},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
                "lastTransitionTime": {"type": "string", "format": "date-time"},
                "reason": {"type": "string", "maxLength": 1024},
                "message": {"type": "string", "maxLength": 32768},
            },
        },
    }


def chain_spec_schema() -> dict[str, Any]:
    nf_item = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": _nf_name_schema(
                "Name of the network function: the value of the flexsfc.io/network-function label "
                "on its pods."
            ),
            "links": {
                "type": "object",
                "description": "Neighbouring network function name -> this NF's interface towards it.",
                "maxProperties": MAX_LINKS_PER_NF,
                "additionalProperties": _ifname_schema("Interface name inside the NF's pods."),
                # Map keys have no length bound, so no rule may compare two keys or match one against
                # a regex: the API server would estimate the cost as too high and refuse the CRD.
                # Keys are checked against the NF names (bounded) by the list's rules instead.
                "x-kubernetes-validations": [
                    {
                        "rule": "self.all(a, self.exists_one(b, self[b] == self[a]))",
                        "message": "each link needs its own interface: two links of the NF use one interface",
                    },
                ],
            },
        },
        "x-kubernetes-validations": [
            {
                "rule": "!has(self.links) || !(self.name in self.links)",
                "message": "a network function cannot link to itself",
            },
        ],
    }
    return {
        "type": "object",
        "required": ["networkFunctions"],
        "properties": {
            "networkFunctions": {
                "type": "array",
                "description": "The chain's network functions and their links to each other.",
                "minItems": 1,
                "maxItems": MAX_NETWORK_FUNCTIONS,
                # A list-map keyed by name: the API server itself rejects duplicate names.
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": nf_item,
                "x-kubernetes-validations": [
                    {
                        "rule": "self.all(a, self.exists_one(b, b.name == a.name))",
                        "message": "network function names must be unique within the chain",
                    },
                    {
                        "rule": "self.all(a, !has(a.links) || "
                        "a.links.all(peer, self.exists(b, b.name == peer)))",
                        "message": "every link must name a network function of this chain",
                    },
                    {
                        "rule": "self.all(a, !has(a.links) || a.links.all(peer, "
                        "self.all(b, b.name != peer || (has(b.links) && a.name in b.links))))",
                        "message": "links must be symmetric: when A links to B, B must link back to A",
                    },
                ],
            },
            "settings": _settings_schema(),
        },
    }


def chain_status_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "observedGeneration": {"type": "integer", "format": "int64"},
            "conditions": _conditions_schema(),
            "crossConnections": {
                "type": "array",
                "description": "Names of the CrossConnections the controller keeps for this chain.",
                "items": {"type": "string"},
            },
            "links": {"type": "integer", "description": "Number of links (CrossConnections)."},
        },
    }


def _xc_side_schema(description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["nf", "interface", "network", "mode", "mac"],
        "properties": {
            "nf": _nf_name_schema("Network function of this side."),
            "interface": _ifname_schema("Interface of the NF's pods on this side."),
            "network": {
                "type": "string",
                "description": "NetworkAttachmentDefinition behind that interface.",
                "minLength": 1,
                "maxLength": 253,
            },
            "mode": {"type": "string", "enum": ["L2", "L3"]},
            "mac": {
                "type": "string",
                "pattern": MAC_PATTERN,
                "description": "MAC shared by every replica of the interface.",
            },
            "addresses": {
                "type": "array",
                "description": "CIDR addresses shared by every replica (L3 only).",
                "maxItems": MAX_ADDRESSES,
                "items": {"type": "string", "maxLength": 64},
            },
        },
        "x-kubernetes-validations": [
            {
                "rule": "self.mode == 'L3' || !has(self.addresses) || size(self.addresses) == 0",
                "message": "an L2 side has no addresses",
            }
        ],
    }


def cross_connection_spec_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["chain", "sideA", "sideB"],
        "properties": {
            "chain": _nf_name_schema("The ServiceFunctionChain this link belongs to.")
            | {"maxLength": 253, "pattern": r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"},
            "sideA": _xc_side_schema("The NF listed earlier in the chain."),
            "sideB": _xc_side_schema("The NF listed later in the chain."),
            "settings": _settings_schema(),
        },
        "x-kubernetes-validations": [
            {"rule": "self.sideA.nf != self.sideB.nf", "message": "the two sides must be different NFs"}
        ],
    }


def _local_ports_schema(side: str) -> dict[str, Any]:
    return {
        "type": "array",
        "description": f"Side {side}'s ports on this node as its data plane holds them (at most 32 listed).",
        "items": {
            "type": "object",
            "properties": {
                "pod": {"type": "string"},
                "interface": {"type": "string"},
                "state": {"type": "string", "description": "active, draining or leaving"},
            },
        },
    }


def _remote_targets_schema(side: str) -> dict[str, Any]:
    return {
        "type": "array",
        "description": f"Side {side}'s replicas on other nodes this node sends to through its tunnel, "
        "by node (at most 32 nodes listed).",
        "items": {
            "type": "object",
            "properties": {
                "node": {"type": "string"},
                "address": {"type": "string", "description": "The node's InternalIP (tunnel destination)."},
                "active": {"type": "integer"},
                "draining": {"type": "integer"},
            },
        },
    }


def cross_connection_status_schema() -> dict[str, Any]:
    node_status = {
        "type": "object",
        "properties": {
            "ready": {
                "type": "boolean",
                "description": "The node's data plane holds this link: no error, and every running replica "
                "of its NFs on the node has its interface attached.",
            },
            "replicasA": {"type": "integer", "description": "Active replicas of side A on the node."},
            "replicasB": {"type": "integer", "description": "Active replicas of side B on the node."},
            "drainingA": {"type": "integer"},
            "drainingB": {"type": "integer"},
            "message": {"type": "string"},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "lastSyncTime": {"type": "string", "format": "date-time"},
            **{f"local{side}": _local_ports_schema(side) for side in "AB"},
            **{f"remote{side}": _remote_targets_schema(side) for side in "AB"},
        },
    }
    return {
        "type": "object",
        "properties": {
            "nodes": {
                "type": "object",
                "description": "Per node name: what that node's agent programmed. Only nodes hosting a "
                "replica of one of the two NFs report; the chain controller prunes the others.",
                "additionalProperties": node_status,
            },
        },
    }
