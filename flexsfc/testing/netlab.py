"""Private network namespaces, veth pairs and data planes for the tests and the benchmarks.

Everything created here is named uniquely and removed after use, so a test or a benchmark never
touches the machine's real host namespace or a running agent's pins: namespaces come and go with
their block, a data plane pins under /sys/fs/bpf/flexsfc/<label>-<unique> and is destroyed with
its pin directory.
"""

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute

from flexsfc.dataplane.api import RedirectMode, ReplicaPort
from flexsfc.dataplane.facade import Dataplane
from flexsfc.model.constants import DEFAULT_PIN_DIR
from flexsfc.model.types import Side
from flexsfc.util.netns import in_netns, netns_path


@contextlib.contextmanager
def private_netns(label: str, prefix: str = "fxlab") -> Iterator[str]:
    """A new network namespace <prefix>-<label>-<unique> with loopback up, deleted on exit."""
    name = f"{prefix}-{label}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def add_veth(
    host_ifname: str,
    peer_ifname: str,
    *,
    peer_netns: str | None = None,
    peer_mac: str | None = None,
    index: int = 0,
) -> int:
    """A veth pair from `host_ifname` in this thread's namespace (left down) to `peer_ifname` in
    `peer_netns` (here when None); `index` asks for that ifindex of the host end. Returns it."""
    peer: dict[str, Any] = {"ifname": peer_ifname}
    if peer_mac:
        peer["address"] = peer_mac
    extra: dict[str, Any] = {"index": index} if index else {}
    with IPRoute() as ipr:
        if peer_netns is None:
            ipr.link("add", ifname=host_ifname, kind="veth", peer=peer, **extra)
        else:
            fd = os.open(netns_path(peer_netns), os.O_RDONLY)
            try:
                peer["net_ns_fd"] = fd  # a descriptor: the namespace need not be under /run/netns
                ipr.link("add", ifname=host_ifname, kind="veth", peer=peer, **extra)
            finally:
                os.close(fd)
        return int(ipr.link_lookup(ifname=host_ifname)[0])


def set_up(ifindex: int) -> None:
    with IPRoute() as ipr:
        ipr.link("set", index=ifindex, state="up")


@dataclass
class Port:
    host_ifname: str
    ifindex: int  # in the host namespace
    netns: str | None  # where the pod end lives (None: host namespace too)
    pod_ifname: str


@dataclass
class Host:
    """The host namespace of a test or benchmark (the thread must be in it while ports are added);
    creates veth pairs whose host ends stay here, up."""

    netns: str
    ports: list[Port] = field(default_factory=list)

    def add_port(
        self, pod_netns: str | None = None, pod_ifname: str = "eth1", mac: str | None = None, index: int = 0
    ) -> Port:
        """A veth pair; without `pod_netns` the peer stays here and down (silent: program tests).
        `mac` is the pod end's; `index` asks for that host ifindex."""
        suffix = uuid.uuid4().hex[:8]
        host_ifname = f"h{suffix}"
        peer_ifname = pod_ifname if pod_netns else f"p{suffix}"
        ifindex = add_veth(host_ifname, peer_ifname, peer_netns=pod_netns, peer_mac=mac, index=index)
        set_up(ifindex)
        port = Port(host_ifname, ifindex, pod_netns, peer_ifname)
        self.ports.append(port)
        return port

    def remove_port(self, port: Port) -> None:
        with IPRoute() as ipr:
            ipr.link("del", index=port.ifindex)
        self.ports.remove(port)


# ---- data planes ------------------------------------------------------------------------------------


def unique_pin_dir(label: str) -> str:
    """A pin directory under /sys/fs/bpf/flexsfc that nothing else uses."""
    return os.path.join(DEFAULT_PIN_DIR, f"{label}-{uuid.uuid4().hex[:10]}")


def remove_pin_dir(path: str) -> None:
    """The pin directory and whatever a data plane left in it (also after a half-done load)."""
    shutil.rmtree(path, ignore_errors=True)


def open_dataplane(pin_dir: str, *, peer: bool = True, **kwargs: Any) -> Dataplane:
    """A Dataplane pinned at `pin_dir`, forwarding with bpf_redirect_peer (peer) or bpf_redirect."""
    mode = RedirectMode.PEER if peer else RedirectMode.REDIRECT
    return Dataplane(pin_dir, redirect_mode=mode, **kwargs)


@contextlib.contextmanager
def dataplane_at(pin_dir: str, **kwargs: Any) -> Iterator[Dataplane]:
    """A Dataplane pinned at `pin_dir` (Dataplane's keyword arguments), destroyed on exit."""
    dp = Dataplane(pin_dir, **kwargs)
    try:
        yield dp
    finally:
        dp.destroy()


@contextlib.contextmanager
def private_dataplane(label: str, **kwargs: Any) -> Iterator[Dataplane]:
    """A Dataplane pinned under /sys/fs/bpf/flexsfc/<label>-<unique>, destroyed on exit; the pin
    directory goes too, even when loading failed half-way (the facade creates it first)."""
    pin_dir = unique_pin_dir(label)
    try:
        with dataplane_at(pin_dir, **kwargs) as dp:
            yield dp
    finally:
        remove_pin_dir(pin_dir)


@contextlib.contextmanager
def private_xc(
    xc: str, netns_label: str, netns_prefix: str, pin_label: str, *, b_ports: int = 4, **kwargs: Any
) -> Iterator[tuple[Dataplane, int, list[int]]]:
    """The calling thread in a private namespace holding a private Dataplane (Dataplane's keyword
    arguments) with one cross-connection `xc`: one replica on side A and `b_ports` on side B, each
    a veth pair whose peer stays in the namespace. Yields (data plane, A's ifindex, B's ifindexes)."""
    with (
        private_netns(netns_label, prefix=netns_prefix) as ns,
        in_netns(ns),
        private_dataplane(pin_label, **kwargs) as dp,
    ):
        host = Host(ns)
        a, b = host.add_port().ifindex, [host.add_port().ifindex for _ in range(b_ports)]
        dp.ensure_xc(xc)
        dp.set_replicas(xc, Side.A, [ReplicaPort(a, "a")])
        dp.set_replicas(xc, Side.B, [ReplicaPort(i, f"b{i}") for i in b])
        yield dp, a, b
