"""The node agent heals missed DELETED events by re-listing: real Kopf, the agent's handlers and loop,
against the Kubernetes API emulator over HTTP (KMock-based, NOT kube-apiserver), with an in-memory
data plane (no root). The emulator drops the DELETED events of the objects the test deletes, as a
watch that broke at that moment would: only the periodic re-list can tell the agent they are gone.
"""

from pathlib import Path

import kopf
import kubernetes
from kube_emulator import EmulatorThread, wait_for
from xc_objects import side, xc_object

from flexsfc.model.constants import (
    API_GROUP,
    API_VERSION,
    LABEL_NF,
    PLURAL_CROSS_CONNECTION,
)
from flexsfc.operator import agent_handlers
from flexsfc.operator.kube import KubeTarget
from flexsfc.operator.runner import running_in_thread
from flexsfc.testing.memory import MemoryDataplane

NODE = "node-a"
RELIST_SECONDS = 0.5


def test_objects_deleted_while_the_watch_missed_it_leave_within_the_relist_period(
    kube: EmulatorThread, kube_api: kubernetes.client.ApiClient, tmp_path: Path
) -> None:
    custom = kubernetes.client.CustomObjectsApi(kube_api)
    core = kubernetes.client.CoreV1Api(kube_api)
    dataplane = MemoryDataplane()
    registry, agent = agent_handlers.build_registry(
        KubeTarget(kube.url),
        NODE,
        dataplane,  # type: ignore[arg-type]
        cni_state_dir=str(tmp_path / "cni"),
        resync_seconds=0.2,
        relist_seconds=RELIST_SECONDS,
    )
    settings = kopf.OperatorSettings()
    agent_handlers.configure(settings, NODE)
    with running_in_thread(registry, settings, name="agent"):
        for name in ("keep", "gone"):
            custom.create_namespaced_custom_object(
                API_GROUP,
                API_VERSION,
                "team-a",
                PLURAL_CROSS_CONNECTION,
                xc_object(name, {"chain": "c", "sideA": side("a"), "sideB": side("b")}),
            )
        pod = core.create_namespaced_pod(
            "team-a",
            {
                "metadata": {"name": "a-0", "labels": {LABEL_NF: "a"}},
                "spec": {"nodeName": NODE, "containers": [{"name": "a", "image": "nf"}]},
            },
        )
        wait_for(lambda: set(dataplane.xcs) == {"team-a/keep", "team-a/gone"}, what="programmed")
        wait_for(lambda: [r.uid for r in agent.loop.replicas()] == [pod.metadata.uid], what="pod seen")

        kube.lose_deletion(f"{API_GROUP}/{API_VERSION}/{PLURAL_CROSS_CONNECTION}", "team-a", "gone")
        kube.lose_deletion("v1/pods", "team-a", "a-0")
        custom.delete_namespaced_custom_object(
            API_GROUP, API_VERSION, "team-a", PLURAL_CROSS_CONNECTION, "gone"
        )
        core.delete_namespaced_pod("a-0", "team-a", grace_period_seconds=0)
        assert not list(kube.objects("v1/pods"))

        # Within a re-list period (plus a reconcile), with no DELETED event ever delivered.
        wait_for(
            lambda: set(dataplane.xcs) == {"team-a/keep"}, timeout=4 * RELIST_SECONDS + 2, what="xc removed"
        )
        wait_for(lambda: not agent.loop.replicas(), timeout=4 * RELIST_SECONDS + 2, what="pod removed")
        assert ("team-a", "gone") not in agent.index.xcs
