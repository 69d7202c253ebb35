"""The attachment record: what flexsfc-cni writes for each NF interface it creates.

The CNI plugin writes it (state directory, and the pod annotation on a cluster); the node agent and
the local runtime read it to find the host side of every NF interface. One JSON object per
attachment, keys in camelCase as on the wire.
"""

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class AttachmentRecord:
    container_id: str
    ifname: str  # interface name inside the pod (CNI_IFNAME)
    netns: str  # CNI_NETNS path
    network: str  # the CNI config's "name" (the NetworkAttachmentDefinition's network name)
    host_ifname: str
    host_ifindex: int
    mac: str
    mode: str  # "L2" or "L3"
    ips: tuple[str, ...] = ()  # CIDR strings, e.g. "10.240.0.2/24"
    mtu: int = 1500
    pod_namespace: str = ""
    pod_name: str = ""
    pod_uid: str = ""
    created_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["ips"] = list(self.ips)
        return {_camel(k): v for k, v in raw.items()}

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), sort_keys=True)

    @classmethod
    def from_json_dict(cls, raw: dict[str, Any]) -> "AttachmentRecord":
        known = {f for f in cls.__dataclass_fields__}
        values = {_snake(k): v for k, v in raw.items()}
        values = {k: v for k, v in values.items() if k in known}
        values["ips"] = tuple(values.get("ips", ()))
        return cls(**values)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
