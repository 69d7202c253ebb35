"""CrossConnection objects as the controller writes them, for the node agent's tests."""

from typing import Any

from flexsfc.model.constants import API_GROUP_VERSION


def side(nf: str) -> dict[str, Any]:
    """An L2 eth1 side of `nf` (network `<nf>-eth1`)."""
    return {"nf": nf, "interface": "eth1", "network": f"{nf}-eth1", "mode": "L2", "mac": "02:00:00:00:00:01"}


def xc_object(name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_GROUP_VERSION,
        "kind": "CrossConnection",
        "metadata": {"name": name, **metadata},
        "spec": spec,
    }
