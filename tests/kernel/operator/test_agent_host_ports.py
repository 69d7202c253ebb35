"""The node agent attaches its program only to veths flexsfc-cni made for the pod (real flexsfc-cni,
real veths and TC filters, the real eBPF data plane in a private "node" namespace; the Kubernetes API
is the emulator, tests/unit/operator/kube_emulator.py, NOT kube-apiserver).

A tenant who can create a labelled pod controls its annotations: one naming the node's uplink as its
data-plane interface must not make the agent attach there. And a record in the state directory must
name a veth that carries flexsfc-cni's mark for that very attachment, whose peer is in the pod's
namespace: anything else is refused and reported, never attached.
"""

import json
import uuid
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kube_emulator import EmulatorThread
from node_lab import InNetnsDataplane
from pyroute2 import IPRoute

from flexsfc.agent.loop import AgentLoop
from flexsfc.cni.state import load_records, write_record
from flexsfc.dataplane.facade import Dataplane
from flexsfc.local.cni import CniCall, cni_add, cni_del
from flexsfc.model.constants import (
    ANNOTATION_INTERFACES,
    API_GROUP,
    API_GROUP_VERSION,
    API_VERSION,
    LABEL_NF,
    PLURAL_CROSS_CONNECTION,
)
from flexsfc.model.records import AttachmentRecord
from flexsfc.model.types import Side
from flexsfc.operator.agent import NodeAgent
from flexsfc.testing.netlab import add_veth, set_up
from flexsfc.util.netns import in_netns, netns_path

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

NODE = "node-a"
TEAM = "team-a"
TC_INGRESS = 0xFFFFFFF2  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)


def server_record(
    container_id: str, pod_name: str, netns: str, host_ifname: str, host_ifindex: int, pod_uid: str = ""
) -> AttachmentRecord:
    """An L3 eth1 attachment record of a server pod of TEAM on `host_ifname` (peer in `netns`)."""
    return AttachmentRecord(
        container_id=container_id,
        ifname="eth1",
        netns=netns_path(netns),
        network="net-server",
        host_ifname=host_ifname,
        host_ifindex=host_ifindex,
        mac="02:00:00:00:60:02",
        mode="L3",
        pod_namespace=TEAM,
        pod_name=pod_name,
        pod_uid=pod_uid,
    )


def ingress_filters(netns: str, ifindex: int) -> list[Any]:
    """Every TC filter at ingress of `ifindex`, whoever attached it, as the kernel lists them."""
    with in_netns(netns), IPRoute() as ipr:
        try:
            return list(ipr.get_filters(index=ifindex, parent=TC_INGRESS))
        except Exception:  # no clsact qdisc at all: no filter either
            return []


def test_annotations_and_foreign_veths_never_get_the_program(
    kube: EmulatorThread,
    kube_api: kubernetes.client.ApiClient,
    node_ns: str,
    dataplane: Dataplane,
    netns_factory: Any,
    tmp_path: Path,
) -> None:
    api = kube_api
    core = kubernetes.client.CoreV1Api(api)
    custom = kubernetes.client.CustomObjectsApi(api)
    state_dir = tmp_path / "cni"
    calls: list[CniCall] = []

    # The node's uplink, and a veth someone else made into a pod's namespace: targets of the attack.
    wan_ns, stray_ns = netns_factory("wan"), netns_factory("stray")
    with in_netns(node_ns):
        uplink = add_veth("uplink0", "eth0", peer_netns=wan_ns)
        stray = add_veth("stray0", "eth1", peer_netns=stray_ns)
        set_up(uplink)
        set_up(stray)

    def pod(name: str, nf: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        created = core.create_namespaced_pod(
            TEAM,
            {
                "metadata": {"name": name, "labels": {LABEL_NF: nf}, "annotations": annotations or {}},
                "spec": {"nodeName": NODE, "containers": [{"name": nf, "image": "nf"}]},
            },
        )
        ready = {"type": "Ready", "status": "True"}
        core.patch_namespaced_pod_status(name, TEAM, {"status": {"phase": "Running", "conditions": [ready]}})
        return {"name": name, "uid": created.metadata.uid}

    def attach(p: dict[str, Any], address: str) -> None:
        """flexsfc-cni ADD for the pod, as Multus would call it on this node."""
        call = CniCall(
            container_id=uuid.uuid4().hex,
            netns_path=netns_path(netns_factory(p["name"][:6])),
            ifname="eth1",
            pod_namespace=TEAM,
            pod_name=p["name"],
            pod_uid=p["uid"],
            config={
                "cniVersion": "1.0.0",
                "name": f"net-{p['name']}",
                "type": "flexsfc-cni",
                "macGenerationString": p["name"],
                "ipam": {"type": "static", "addresses": [{"address": address}]},
                "stateDir": str(state_dir),
            },
        )
        with in_netns(node_ns):
            cni_add(call)
        calls.append(call)

    try:
        client, server = pod("client-0", "client"), pod("server-0", "server")
        attach(client, "10.60.0.1/24")
        attach(server, "10.60.0.2/24")
        # A pod of the server NF that names the uplink in the annotation the plugin would write.
        claimed = server_record("c-evil", "server-evil", wan_ns, "uplink0", uplink)
        evil = pod("server-evil", "server", {ANNOTATION_INTERFACES: json.dumps([claimed.to_json_dict()])})
        # A record on the node naming a veth flexsfc-cni did not make (no mark), peer in the pod's netns.
        forged = pod("server-forged", "server")
        write_record(
            str(state_dir),
            server_record("c-forged", "server-forged", stray_ns, "stray0", stray, pod_uid=forged["uid"]),
        )

        agent = NodeAgent(
            NODE,
            AgentLoop(InNetnsDataplane(dataplane, node_ns)),  # type: ignore[arg-type]
            api,
            cni_state_dir=str(state_dir),
            host_netns=node_ns,
        )
        for obj in kube.objects("v1/pods"):
            agent.on_pod_event("ADDED", obj)
        side = {"interface": "eth1", "mode": "L3"}
        xc = custom.create_namespaced_custom_object(
            API_GROUP,
            API_VERSION,
            TEAM,
            PLURAL_CROSS_CONNECTION,
            {
                "apiVersion": API_GROUP_VERSION,
                "kind": "CrossConnection",
                "metadata": {"name": "web-client-server"},
                "spec": {
                    "chain": "web",
                    "sideA": {
                        **side,
                        "nf": "client",
                        "network": "net-client-0",
                        "mac": "02:00:00:00:60:01",
                        "addresses": ["10.60.0.1/24"],
                    },
                    "sideB": {
                        **side,
                        "nf": "server",
                        "network": "net-server-0",
                        "mac": "02:00:00:00:60:02",
                        "addresses": ["10.60.0.2/24"],
                    },
                },
            },
        )
        agent.on_xc_event("ADDED", xc)
        report = agent.loop.sync("test")
        agent.on_report("test", report)

        # Only the real attachment of server-0 is a port; the uplink and the stray veth carry no filter.
        server_port = next(
            r.host_ifindex for r in load_records(str(state_dir)) if r.container_id == calls[1].container_id
        )
        assert [p.ifindex for p in dataplane.replicas(f"{TEAM}/web-client-server", Side.B)] == [server_port]
        assert ingress_filters(node_ns, server_port), "positive control: the real port has our filter"
        assert ingress_filters(node_ns, uplink) == []
        assert ingress_filters(node_ns, stray) == []

        # The forged record is refused and reported; the annotation is reported as ignored.
        assert list(agent.refused) == [("c-forged", "eth1")]
        assert "lacks flexsfc-cni's mark" in agent.refused[("c-forged", "eth1")].reason
        status = custom.get_namespaced_custom_object(
            API_GROUP, API_VERSION, TEAM, PLURAL_CROSS_CONNECTION, "web-client-server"
        )["status"]["nodes"][NODE]
        assert "pod server-forged: interface eth1 refused: veth stray0 lacks" in status["message"]
        assert "pod server-evil: interface eth1 only the pod annotation lists it" in status["message"]
        assert evil["uid"] not in {r.uid for r in agent.loop.replicas() if r.interfaces}
    finally:
        for call in calls:
            try:
                with in_netns(node_ns):
                    cni_del(call)
            except Exception:
                pass  # the namespaces go with netns_factory anyway
        api.close()
