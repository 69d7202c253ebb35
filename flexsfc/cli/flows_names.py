"""Names for `flexsfc flows` and `flexsfc sessions`: host ifindexes, cross-connection ids and chains
turned into pods, NFs, interfaces and names.

They come from the data plane's port records (replica identities) and, when its supervisor runs, the
local runtime's status (pod names, interfaces, chains); a history's reply carries its own
(`names_of_history`). Also where the pinned data plane is (`default_pin_dir`, `require_pins`).
"""

import contextlib
import os
from dataclasses import dataclass, field

import click

from flexsfc.agent.flow_history import PortNames
from flexsfc.dataplane import maps
from flexsfc.model.constants import DEFAULT_PIN_DIR


@dataclass(frozen=True)
class PortName:
    ifindex: int
    pod: str = ""  # namespace/name, "" when unknown
    nf: str = ""
    ifname: str = ""
    xc: str = ""
    side: str = ""

    def label(self) -> str:
        if not self.ifindex:
            return "-"
        if self.pod:
            return (
                f"{self.pod.split('/', 1)[-1]}/{self.ifname}" if self.ifname else self.pod.split("/", 1)[-1]
            )
        return f"if{self.ifindex}"


@dataclass
class Names:
    """ifindex -> port, xc id -> name, xc name -> chain: from the data plane and the runtime."""

    ports: dict[int, PortName] = field(default_factory=dict)
    xcs: dict[int, str] = field(default_factory=dict)
    chains: dict[str, str] = field(default_factory=dict)  # xc name -> chain

    def port(self, ifindex: int) -> PortName:
        return self.ports.get(ifindex) or PortName(ifindex)

    def xc(self, xc_id: int) -> str:
        return self.xcs.get(xc_id, str(xc_id) if xc_id else "")


def load_names(pin_dir: str, state_dir: str | None) -> Names:
    """What the data plane at `pin_dir` and (when it runs) the local runtime know about its ports."""
    from flexsfc.dataplane.facade import Dataplane
    from flexsfc.model.types import Side

    names = Names()
    pods: dict[int, tuple[str, str, str]] = {}  # host ifindex -> (pod, nf, ifname)
    uids: dict[str, str] = {}
    with contextlib.suppress(Exception):  # no runtime here (a cluster node) or not running
        from flexsfc.local import control
        from flexsfc.local.config import RuntimeConfig

        status = control.status(RuntimeConfig.for_dir(state_dir), timeout=5)
        for p in status.pods:
            uids[p.uid] = p.key
            for record in p.records:
                pods[record.host_ifindex] = (p.key, p.nf, record.ifname)
        for xc in status.cross_connections:
            names.chains[f"{xc.namespace}/{xc.name}"] = xc.chain
            names.chains.setdefault(xc.name, xc.chain)
    with Dataplane(pin_dir) as dp:
        for name, xc_id in dp.list_xcs().items():
            names.xcs[xc_id] = name
            for side in (Side.A, Side.B):
                for replica in dp.replicas(name, side):
                    owner, nf, ifname = pods.get(replica.ifindex, (uids.get(replica.identity, ""), "", ""))
                    names.ports[replica.ifindex] = PortName(
                        replica.ifindex, owner or replica.identity, nf, ifname, name, side.value
                    )
    for ifindex, (owner, nf, ifname) in pods.items():
        names.ports.setdefault(ifindex, PortName(ifindex, owner, nf, ifname))
    return names


def names_of_history(data: PortNames) -> Names:
    """The names a history's reply carries: the data plane's records (replica identities, xc names)."""
    names = Names()
    for xc_id, name in data.get("xcs", {}).items():
        names.xcs[int(xc_id)] = str(name)
    for ifindex, port in data.get("ports", {}).items():
        names.ports[int(ifindex)] = PortName(
            int(ifindex),
            str(port.get("identity", "")),
            xc=str(port.get("xc", "")),
            side=str(port.get("side", "")),
        )
    return names


def default_pin_dir(state_dir: str | None) -> str:
    """The local runtime's pin directory when it has one, else the node agent's."""
    with contextlib.suppress(Exception):
        from flexsfc.local.config import RuntimeConfig

        pin_dir = RuntimeConfig.for_dir(state_dir).pin_dir
        if os.path.exists(os.path.join(pin_dir, maps.PROGRAM_NAME)):
            return pin_dir
    return DEFAULT_PIN_DIR


def require_pins(pin_dir: str) -> str:
    """`pin_dir` when a data plane is pinned there: a reader must never load one (Dataplane would)."""
    if not os.path.exists(os.path.join(pin_dir, maps.PROGRAM_NAME)):
        raise click.ClickException(
            f"no data plane pinned at {pin_dir}: give --pin-dir (the node agent's is {DEFAULT_PIN_DIR}) "
            "or --state-dir of a running local runtime"
        )
    return pin_dir
