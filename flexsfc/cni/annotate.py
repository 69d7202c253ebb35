"""Publish a pod's attachments in its ``flexsfc.io/interfaces`` annotation (cluster mode only).

Only used when the configuration carries ``kubeconfig`` (Multus passes one to its delegates). The
annotation lists every flexsfc attachment of the pod on this node, rebuilt from the state directory,
so concurrent or repeated calls converge on the same value. The kubernetes client is imported here,
lazily: it costs hundreds of milliseconds and plain local use never needs it.
"""

import json
import sys

from flexsfc.model.constants import ANNOTATION_INTERFACES
from flexsfc.model.records import AttachmentRecord


def annotation_value(records: list[AttachmentRecord]) -> str:
    ordered = sorted(records, key=lambda r: r.ifname)
    return json.dumps([r.to_json_dict() for r in ordered], sort_keys=True)


def annotate_pod(kubeconfig: str, namespace: str, name: str, records: list[AttachmentRecord]) -> None:
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    body = {"metadata": {"annotations": {ANNOTATION_INTERFACES: annotation_value(records)}}}
    api.patch_namespaced_pod(name, namespace, body, _request_timeout=10)


def try_annotate_pod(kubeconfig: str, namespace: str, name: str, records: list[AttachmentRecord]) -> bool:
    """Best effort: a failed annotation is reported on stderr and does not fail the CNI call.

    The interface works either way, and the node agent can always read the state directory; failing
    ADD would make the kubelet tear down and recreate the whole pod sandbox for a metadata write.
    """
    if not namespace or not name:
        print(
            "flexsfc-cni: no K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS; pod not annotated", file=sys.stderr
        )
        return False
    try:
        annotate_pod(kubeconfig, namespace, name, records)
    except Exception as exc:  # any client, config or API failure: report and go on
        print(f"flexsfc-cni: cannot annotate pod {namespace}/{name}: {exc}", file=sys.stderr)
        return False
    return True
