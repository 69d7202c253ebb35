"""Fixtures for data-plane tests: a private "host" network namespace holding the host-side veths,
and a Dataplane pinned under a unique directory, both always removed.

The test body runs with its thread switched into the host namespace (TC attach and test_run resolve
ifindexes there), so nothing touches the machine's real host namespace.
"""

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from pyroute2 import IPRoute

from flexsfc.dataplane.facade import Dataplane
from flexsfc.model.constants import DEFAULT_PIN_DIR
from flexsfc.util.netns import in_netns, netns_path


@dataclass
class Port:
    host_ifname: str
    ifindex: int  # in the host namespace
    netns: str | None  # where the pod end lives (None: host namespace too)
    pod_ifname: str


@dataclass
class Host:
    """The host namespace of a test; creates veth pairs whose host ends stay here."""

    netns: str
    ports: list[Port] = field(default_factory=list)

    def add_port(
        self, pod_netns: str | None = None, pod_ifname: str = "eth1", mac: str | None = None, index: int = 0
    ) -> Port:
        """A veth pair; without `pod_netns` the peer stays here and down (silent: program tests).
        `index` asks for that host ifindex."""
        suffix = uuid.uuid4().hex[:8]
        host_ifname = f"h{suffix}"
        peer: dict = {"ifname": pod_ifname if pod_netns else f"p{suffix}"}
        if mac:
            peer["address"] = mac
        with IPRoute() as ipr:
            if pod_netns:
                fd = os.open(netns_path(pod_netns), os.O_RDONLY)
                try:
                    peer["net_ns_fd"] = fd
                    ipr.link("add", ifname=host_ifname, kind="veth", peer=peer)
                finally:
                    os.close(fd)
            elif index:
                ipr.link("add", ifname=host_ifname, index=index, kind="veth", peer=peer)
            else:
                ipr.link("add", ifname=host_ifname, kind="veth", peer=peer)
            ifindex = ipr.link_lookup(ifname=host_ifname)[0]
            ipr.link("set", index=ifindex, state="up")
        port = Port(host_ifname, ifindex, pod_netns, peer["ifname"])
        self.ports.append(port)
        return port

    def remove_port(self, port: Port) -> None:
        with IPRoute() as ipr:
            ipr.link("del", index=port.ifindex)
        self.ports.remove(port)


@pytest.fixture
def host(netns_factory) -> Iterator[Host]:
    name = netns_factory("dphost")
    with in_netns(name):
        yield Host(name)


def unique_pin_dir() -> str:
    return os.path.join(DEFAULT_PIN_DIR, f"test-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def pin_dir() -> Iterator[str]:
    path = unique_pin_dir()
    try:
        yield path
    finally:
        if os.path.isdir(path):
            for name in os.listdir(path):
                os.unlink(os.path.join(path, name))
            os.rmdir(path)


@pytest.fixture
def dataplane(host: Host, pin_dir: str) -> Iterator[Dataplane]:
    dp = Dataplane(pin_dir, session_capacity=65536, seed=12345)
    try:
        yield dp
    finally:
        dp.destroy()
