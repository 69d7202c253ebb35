"""CNI error codes and the error type every verb raises; main turns it into the spec's JSON error."""

from dataclasses import dataclass
from typing import Any

# Well-known codes of the CNI specification (1.1.0, "Error").
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
CONTAINER_UNKNOWN = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50

# flexsfc-cni's own codes (the spec reserves 100 and above for plugins).
LINK_FAILURE = 100  # a netlink operation on the veth pair, its addresses or routes failed
IPAM_FAILURE = 101  # the IPAM plugin could not be run or returned something unusable
CHECK_FAILED = 102  # CHECK found the attachment different from what ADD created
STATE_FAILURE = 103  # the state directory could not be read or written
INTERFACE_EXISTS = 104  # the pod already has an interface with the requested name


@dataclass
class CniError(Exception):
    code: int
    msg: str
    details: str = ""

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg

    def to_json_dict(self, cni_version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out
