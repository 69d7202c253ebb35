"""The real Kopf chain controller against a Kubernetes API emulator over HTTP.

The emulator (tests/unit/operator/kube_emulator.py) is KMock plus server-owned metadata, selectors,
/status and an emulated garbage collector: it is NOT kube-apiserver (no admission, no CRD schema
validation). The controller, Kopf and the kubernetes client are the production code paths.
"""

import copy
import logging
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kube_emulator import EmulatorThread, wait_for

from flexsfc.model import load_plan
from flexsfc.model.constants import API_GROUP, API_VERSION, LABEL_CHAIN, PLURAL_CHAIN, PLURAL_CROSS_CONNECTION
from flexsfc.model.manifests import load_documents
from flexsfc.operator import controller_handlers, deployset
from flexsfc.operator.convert import xc_spec_dict
from flexsfc.operator.kube import KubeTarget
from flexsfc.operator.runner import running_in_thread

EXAMPLE = Path(__file__).parents[3] / "examples" / "transparent-firewall"
NAMESPACE = "default"
XC_RESOURCE = f"{API_GROUP}/{API_VERSION}/{PLURAL_CROSS_CONNECTION}"


def example_objects() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the chain, the Deployments and NADs) of the transparent-firewall example."""
    documents, issues = load_documents(EXAMPLE)
    assert not [i for i in issues if i.is_error]
    chain = next(d.obj for d in documents if d.kind == "ServiceFunctionChain")
    others = [d.obj for d in documents if d.kind in ("Deployment", "NetworkAttachmentDefinition")]
    return copy.deepcopy(chain), copy.deepcopy(others)


def create(api: kubernetes.client.ApiClient, obj: dict[str, Any]) -> None:
    group_version = obj["apiVersion"]
    if obj["kind"] == "Deployment":
        kubernetes.client.AppsV1Api(api).create_namespaced_deployment(NAMESPACE, obj)
        return
    group, version = group_version.split("/")
    plural = {
        "NetworkAttachmentDefinition": "network-attachment-definitions",
        "ServiceFunctionChain": PLURAL_CHAIN,
    }
    kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(
        group, version, NAMESPACE, plural[obj["kind"]], obj
    )


def chain_status(api: kubernetes.client.ApiClient, name: str) -> dict[str, Any]:
    chain = kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(
        API_GROUP, API_VERSION, NAMESPACE, PLURAL_CHAIN, name
    )
    return chain.get("status") or {}


def status_at(api: kubernetes.client.ApiClient, name: str, generation: int) -> dict[str, Any] | None:
    status = chain_status(api, name)
    return status if status.get("observedGeneration") == generation else None


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


@pytest.mark.timeout(60)
def test_chain_lifecycle_creates_updates_and_garbage_collects_cross_connections(
    kube: EmulatorThread, kube_api: kubernetes.client.ApiClient, controller: None
) -> None:
    chain, nf_objects = example_objects()
    for obj in nf_objects:
        create(kube_api, obj)
    create(kube_api, chain)
    name = chain["metadata"]["name"]
    expected = {xc.name: xc for xc in load_plan(EXAMPLE).cross_connections}
    settings = load_plan(EXAMPLE).chains[0].settings

    # create -> one CrossConnection per link, owned by the chain, with the planned spec; status Ready
    xcs = wait_for(
        lambda: (
            {o["metadata"]["name"]: o for o in kube.objects(XC_RESOURCE)}
            if len(list(kube.objects(XC_RESOURCE))) == len(expected)
            else None
        ),
        what="cross-connections",
    )
    assert set(xcs) == set(expected)
    chain_uid = next(kube.objects(f"{API_GROUP}/{API_VERSION}/{PLURAL_CHAIN}"))["metadata"]["uid"]
    for xc_name, obj in xcs.items():
        assert obj["spec"] == xc_spec_dict(expected[xc_name], settings)
        assert obj["metadata"]["labels"][LABEL_CHAIN] == name
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner["uid"] == chain_uid and owner["kind"] == "ServiceFunctionChain" and owner["controller"]
    status = wait_for(lambda: status_at(kube_api, name, 1), what="generation 1 status")
    assert condition(status, "Ready")["status"] == "True", status
    assert condition(status, "Degraded")["status"] == "False"
    assert status["links"] == len(expected) and sorted(status["crossConnections"]) == sorted(expected)
    wait_for(
        lambda: any(
            e.get("reason") == "CrossConnectionCreated" and e["involvedObject"]["uid"] == chain_uid
            for e in kube.objects("v1/events")
        ),
        what="CrossConnectionCreated event",
    )

    # update: drop the server -> its link's CrossConnection goes, observedGeneration follows
    custom = kubernetes.client.CustomObjectsApi(kube_api)
    nfs = [nf for nf in chain["spec"]["networkFunctions"] if nf["name"] != "server"]
    gw = next(nf for nf in nfs if nf["name"] == "gw")
    gw["links"] = {"firewall": gw["links"]["firewall"]}
    custom.patch_namespaced_custom_object(
        API_GROUP, API_VERSION, NAMESPACE, PLURAL_CHAIN, name, {"spec": {"networkFunctions": nfs}}
    )
    wait_for(lambda: chain_status(kube_api, name).get("observedGeneration") == 2, what="generation 2")
    remaining = {o["metadata"]["name"] for o in kube.objects(XC_RESOURCE)}
    assert remaining == {n for n, xc in expected.items() if "server" not in (xc.side_a.nf, xc.side_b.nf)}

    # invalid update: a self link -> Degraded with the model's message, nothing applied, Warning Event
    nfs[0]["links"] = dict(nfs[0]["links"], client="eth9")
    custom.patch_namespaced_custom_object(
        API_GROUP, API_VERSION, NAMESPACE, PLURAL_CHAIN, name, {"spec": {"networkFunctions": nfs}}
    )
    status = wait_for(lambda: status_at(kube_api, name, 3), what="generation 3 status")
    degraded = condition(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec"), status
    assert "links to itself" in degraded["message"] and "Fix:" in degraded["message"]
    assert condition(status, "Ready")["status"] == "False"
    assert {o["metadata"]["name"] for o in kube.objects(XC_RESOURCE)} == remaining
    wait_for(
        lambda: any(
            e.get("reason") == "InvalidSpec" and e.get("type") == "Warning" for e in kube.objects("v1/events")
        ),
        what="InvalidSpec warning event",
    )

    # delete: the (emulated) garbage collector removes the owned CrossConnections; no finalizer blocks
    custom.delete_namespaced_custom_object(API_GROUP, API_VERSION, NAMESPACE, PLURAL_CHAIN, name)
    wait_for(lambda: not list(kube.objects(XC_RESOURCE)), what="garbage collection")

    # the controller never wrote to the NF Deployments or the NetworkAttachmentDefinitions
    assert not kube.requests_to("apps/v1/deployments", "update")
    assert not kube.requests_to("k8s.cni.cncf.io/v1/network-attachment-definitions", "update")


@pytest.mark.timeout(60)
def test_late_deployment_resolves_the_chain(
    kube: EmulatorThread, kube_api: kubernetes.client.ApiClient, controller: None
) -> None:
    """Objects arrive in any order: a chain before its NFs is Degraded, then heals by itself."""
    chain, nf_objects = example_objects()
    create(kube_api, chain)
    name = chain["metadata"]["name"]
    status = wait_for(lambda: status_at(kube_api, name, 1), what="first status")
    assert condition(status, "Degraded")["status"] == "True", status
    assert condition(status, "Degraded")["reason"] == "Unresolved"
    assert not list(kube.objects(XC_RESOURCE))

    for obj in nf_objects:
        create(kube_api, obj)
    wait_for(lambda: condition(chain_status(kube_api, name), "Ready").get("status") == "True", what="Ready")
    assert len(list(kube.objects(XC_RESOURCE))) == len(load_plan(EXAMPLE).cross_connections)

    # someone deletes a CrossConnection by hand: the controller puts it back
    victim = sorted(o["metadata"]["name"] for o in kube.objects(XC_RESOURCE))[0]
    kubernetes.client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        API_GROUP, API_VERSION, NAMESPACE, PLURAL_CROSS_CONNECTION, victim
    )
    wait_for(
        lambda: victim in {o["metadata"]["name"] for o in kube.objects(XC_RESOURCE)}, what="re-created xc"
    )


@pytest.mark.timeout(60)
def test_peering_keeps_one_controller_active(
    kube: EmulatorThread, kube_api: kubernetes.client.ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Two controllers share the ClusterKopfPeering of deploy/: the lower priority one pauses."""
    caplog.set_level(logging.INFO, logger="kopf")
    peering = deployset.peering()
    kubernetes.client.CustomObjectsApi(kube_api).create_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", peering
    )
    name = peering["metadata"]["name"]
    operators = []
    for priority in (100, 1):
        registry, _ = controller_handlers.build_registry(KubeTarget(kube.url))
        settings = controller_handlers.kopf.OperatorSettings()
        controller_handlers.configure(settings, peering=name, priority=priority)
        settings.peering.lifetime = 10
        operators.append((registry, settings))
    with (
        running_in_thread(*operators[0], standalone=False, name="controller-high"),
        running_in_thread(*operators[1], standalone=False, name="controller-low"),
    ):
        peers = wait_for(
            lambda: len(kube_peering_status(kube, name)) == 2 and kube_peering_status(kube, name),
            what="both peers registered",
        )
        assert sorted(p["priority"] for p in peers.values()) == [1, 100]
        wait_for(
            lambda: peering_state(caplog, "controller-high") == "active", what="high-priority peer active"
        )
        chain, nf_objects = example_objects()
        for obj in [*nf_objects, chain]:
            create(kube_api, obj)
        wait_for(lambda: condition(chain_status(kube_api, chain["metadata"]["name"]), "Ready"), what="served")
        # mandatory peering starts paused; the low-priority controller must never have resumed for good
        assert peering_state(caplog, "controller-low") in ("paused", "never resumed")


def peering_state(caplog: pytest.LogCaptureFixture, thread: str) -> str:
    """The last pause/resume decision Kopf's peering logged in one operator's thread."""
    state = "never resumed"
    for record in caplog.records:
        if record.threadName != thread:
            continue
        if "Resuming operations" in record.getMessage():
            state = "active"
        elif "Pausing operations" in record.getMessage():
            state = "paused"
    return state


def kube_peering_status(kube: EmulatorThread, name: str) -> dict[str, Any]:
    peering = next(
        (p for p in kube.objects("kopf.dev/v1/clusterkopfpeerings") if p["metadata"]["name"] == name), {}
    )
    return peering.get("status") or {}
