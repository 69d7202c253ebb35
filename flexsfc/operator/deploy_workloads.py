"""The workloads of the generated deployment set: the controller Deployment, the agent DaemonSet
(with its shim install and bpffs mount), the critical-pods quota and the node-cleanup DaemonSet.

The agent DaemonSet installs one file on the node, the shim, and runs unprivileged with the
capabilities of AGENT_CAPABILITIES (docs/kubernetes.md: "What the install puts on a node",
"Privileges", "Ports and probes", "Priority class", "Uninstall").
"""

import os
from typing import Any, Final

from flexsfc.cni.config import DEFAULT_DELETE_QUEUE, DEFAULT_SOCKET
from flexsfc.model.constants import DEFAULT_CNI_STATE_DIR, DEFAULT_PIN_DIR
from flexsfc.operator.deploy_base import (
    AGENT,
    CONTROLLER,
    HEALTH_PORT,
    IMAGE_CNI_DIR,
    NAMESPACE,
    PART_OF,
    PEERING_NAME,
    component_labels,
    env_var,
    field_env,
    host_path,
    image_container,
    restricted,
    workload,
)


def _probe() -> dict[str, Any]:
    return {
        "httpGet": {"path": "/healthz", "port": HEALTH_PORT},
        "initialDelaySeconds": 10,
        "periodSeconds": 20,
        "timeoutSeconds": 5,
    }


def controller_deployment() -> dict[str, Any]:
    labels = component_labels(CONTROLLER)
    container = image_container(
        "controller",
        ["flexsfc", "operator", "controller"],
        args=["--peering", PEERING_NAME, "--liveness", f"http://0.0.0.0:{HEALTH_PORT}/healthz"],
        ports=[{"name": "health", "containerPort": HEALTH_PORT}],
        livenessProbe=_probe(),
        resources={"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "256Mi"}},
        securityContext=restricted(non_root=True),
    )
    return workload(
        "Deployment",
        CONTROLLER,
        labels,
        {"serviceAccountName": CONTROLLER, "containers": [container]},
        replicas=2,  # for fail-over; Kopf peering keeps exactly one of them active
    )


# The node's CNI binary directory, where the kubelet / Multus look for `flexsfc-cni`. Distributions
# differ (k3s, OpenShift, GKE, ...): an overlay changes the `cni-bin` volume's hostPath, nothing else
# (deploy/overlays/, docs/kubernetes.md).
DEFAULT_CNI_BIN_DIR: Final = "/opt/cni/bin"
CNI_BIN_MOUNT: Final = "/host/cni-bin"  # where the install and uninstall containers see it
SHIM_NAME: Final = "flexsfc-cni"
IMAGE_SHIM: Final = f"{IMAGE_CNI_DIR}/{SHIM_NAME}"
# The agent image's own IPAM plugins (Debian's containernetworking-plugins): served L3 calls run
# `static` from here, never from the node (flexsfc.cni.ipam, FLEXSFC_IPAM_PATH).
IMAGE_IPAM_PATH: Final = "/usr/lib/cni"
# Node paths the agent shares with the shim: the CNI socket's directory, the state directory (the
# CNI records and the shim's DEL queue), bpffs and the runtime's network namespaces.
SOCKET_DIR: Final = os.path.dirname(DEFAULT_SOCKET)
STATE_ROOT: Final = "/var/lib/flexsfc"
HOST_PROC_MOUNT: Final = "/host/proc"
METRICS_PORT: Final = 9101  # flexsfc.metrics.exporter.DEFAULT_METRICS_PORT (deploy/autoscaling scrapes it)
AGENT_HEALTH_PORT: Final = 9102  # Kopf's liveness endpoint, on the node's 127.0.0.1 only
AGENT_LIVENESS_URL: Final = f"http://127.0.0.1:{AGENT_HEALTH_PORT}/healthz"
# The agent's capabilities instead of `privileged: true` (docs/kubernetes.md, "Privileges"):
# NET_ADMIN: veths, addresses, routes, TC filters, and the networking BPF program types;
# SYS_ADMIN: setns() into pod network namespaces (and, with it, bpf() and its pins: the kernel's
# bpf_capable() and perfmon_capable() accept CAP_SYS_ADMIN in place of CAP_BPF and CAP_PERFMON);
# SYS_RESOURCE: raising RLIMIT_MEMLOCK for BPF maps on kernels before 5.11 (memcg accounting after).
AGENT_CAPABILITIES: Final = ("NET_ADMIN", "SYS_ADMIN", "SYS_RESOURCE")
CRITICAL_PRIORITY_CLASS: Final = "system-node-critical"
APPARMOR_ANNOTATION: Final = "container.apparmor.security.beta.kubernetes.io"

# Install: exactly one file, the shim, copied under a temporary name in the same directory and
# renamed over `flexsfc-cni` (atomic: a runtime never runs a half-written file, and a shim being
# executed is replaced, not overwritten, which would fail with ETXTBSY). Nothing else is written.
INSTALL_SCRIPT: Final = (
    "set -eu\n"
    'test -x "$SHIM"\n'
    'tmp="$CNI_BIN/.flexsfc-cni.tmp"\n'
    'cp "$SHIM" "$tmp"\n'
    'chmod 0755 "$tmp"\n'
    'mv -f "$tmp" "$CNI_BIN/flexsfc-cni"\n'
    'echo "installed $CNI_BIN/flexsfc-cni"\n'
)
# Uninstall (deploy/uninstall/, once the agent is deleted): the one file the install wrote, and the
# node state the agent and the shim left (socket directory, CNI records and DEL queue, pins).
UNINSTALL_SCRIPT: Final = (
    "set -eu\n"
    'rm -f "$CNI_BIN/flexsfc-cni" "$CNI_BIN/.flexsfc-cni.tmp"\n'
    # The directories are hostPath mount points: empty them (rmdir of a mount point fails, EBUSY).
    'for dir in "$HOST$SOCKET_DIR" "$HOST$STATE_ROOT" "$HOST$PIN_DIR"; do\n'
    '  if [ -d "$dir" ]; then find "$dir" -mindepth 1 -delete; fi\n'
    "done\n"
    'echo "removed $CNI_BIN/flexsfc-cni and the flexsfc node state"\n'
)
# bpffs must be the host's (pins outlive the agent's container); mounted here when the node has none.
# The file system type decides, not `mountpoint`: the hostPath bind mount is a mount point either way.
MOUNT_BPFFS_SCRIPT: Final = (
    "set -eu\n"
    'if [ "$(stat -f -c %T /host/sys/fs/bpf)" != bpf_fs ]; then\n'
    "  mount -t bpf bpf /host/sys/fs/bpf\n"
    "  echo 'mounted bpffs at /sys/fs/bpf'\n"
    "fi\n"
)


def _cni_bin_volume() -> dict[str, Any]:
    return host_path("cni-bin", DEFAULT_CNI_BIN_DIR)


def _install_cni_container() -> dict[str, Any]:
    return image_container(
        "install-cni",
        ["sh", "-c", INSTALL_SCRIPT],
        env=[env_var("SHIM", IMAGE_SHIM), env_var("CNI_BIN", CNI_BIN_MOUNT)],
        volumeMounts=[{"name": "cni-bin", "mountPath": CNI_BIN_MOUNT}],
        securityContext=restricted(),  # root writing a root-owned directory: no capability needed
    )


def _mount_bpffs_container() -> dict[str, Any]:
    return image_container(
        "mount-bpffs",
        ["sh", "-c", MOUNT_BPFFS_SCRIPT],
        # Privileged for one reason: a mount made in the container reaches the host only through
        # Bidirectional propagation, which the API allows to privileged containers only. It exits
        # at once; the long-running agent is not privileged.
        securityContext={"privileged": True},
        volumeMounts=[
            {"name": "bpffs", "mountPath": "/host/sys/fs/bpf", "mountPropagation": "Bidirectional"}
        ],
    )


def _health_command(*checks: str) -> list[str]:
    return ["flexsfc", "agent-health", *checks]


def agent_daemonset() -> dict[str, Any]:
    labels = component_labels(AGENT)
    agent = image_container(
        "agent",
        ["flexsfc", "operator", "agent"],
        args=[
            "--pin-dir",
            DEFAULT_PIN_DIR,
            "--cni-state-dir",
            DEFAULT_CNI_STATE_DIR,
            "--cni-socket",
            DEFAULT_SOCKET,
            "--delete-queue",
            DEFAULT_DELETE_QUEUE,
            "--liveness",
            AGENT_LIVENESS_URL,
            "--metrics-port",
            str(METRICS_PORT),
            # The node's own address (hostNetwork): Prometheus reaches it, 0.0.0.0 is not needed.
            "--metrics-addr",
            "$(HOST_IP)",
        ],
        env=[
            field_env("NODE_NAME", "spec.nodeName"),
            field_env("HOST_IP", "status.hostIP"),
            env_var("FLEXSFC_IPAM_PATH", IMAGE_IPAM_PATH),
            # /proc/sys is read-only in an unprivileged container: per-interface sysctls are written
            # through the host's procfs (a thread's view of /proc/sys/net follows its netns).
            env_var("FLEXSFC_PROCFS", HOST_PROC_MOUNT),
        ],
        # hostNetwork: these are the node's ports. Declared so that they are visible and conflicts
        # are caught at scheduling; health binds the node's 127.0.0.1 only.
        ports=[
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
            {"name": "health", "containerPort": AGENT_HEALTH_PORT, "protocol": "TCP"},
        ],
        # Exec probes: nothing has to listen beyond the node's loopback for the kubelet.
        livenessProbe={
            "exec": {"command": _health_command("--url", AGENT_LIVENESS_URL)},
            "initialDelaySeconds": 15,
            "periodSeconds": 20,
            "timeoutSeconds": 10,
            "failureThreshold": 3,
        },
        readinessProbe={
            "exec": {"command": _health_command("--socket", DEFAULT_SOCKET)},
            "periodSeconds": 10,
            "timeoutSeconds": 10,
        },
        resources={"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        securityContext={
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": list(AGENT_CAPABILITIES)},
            # The runtime's default AppArmor profile denies mount and writes under /sys/fs/ other
            # than cgroup, so pinning under /sys/fs/bpf would fail (Cilium's agent does the same).
            "appArmorProfile": {"type": "Unconfined"},
        },
        volumeMounts=[
            {"name": "bpffs", "mountPath": "/sys/fs/bpf", "mountPropagation": "HostToContainer"},
            {"name": "netns", "mountPath": "/run/netns", "mountPropagation": "HostToContainer"},
            {"name": "state", "mountPath": STATE_ROOT},
            {"name": "cni-socket", "mountPath": SOCKET_DIR},
            {"name": "host-proc", "mountPath": HOST_PROC_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    )
    pod_spec = {
        "serviceAccountName": AGENT,
        "hostNetwork": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        # Outside kube-system: admitted through critical_pods_quota() (docs/kubernetes.md).
        "priorityClassName": CRITICAL_PRIORITY_CLASS,
        "tolerations": [{"operator": "Exists"}],
        "initContainers": [_mount_bpffs_container(), _install_cni_container()],
        "containers": [agent],
        "volumes": [
            host_path("bpffs", "/sys/fs/bpf"),
            host_path("netns", "/run/netns"),
            host_path("state", STATE_ROOT),
            host_path("cni-socket", SOCKET_DIR),
            host_path("host-proc", "/proc", "Directory"),
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
            _cni_bin_volume(),
        ],
    }
    return workload(
        "DaemonSet",
        AGENT,
        labels,
        pod_spec,
        # One node at a time; pinned maps keep forwarding while an agent restarts.
        update_strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
        # The same AppArmor choice for clusters before 1.30, which know only the annotation.
        annotations={f"{APPARMOR_ANNOTATION}/agent": "unconfined"},
    )


def critical_pods_quota() -> dict[str, Any]:
    """Where the API server limits the system-*-critical classes to kube-system (GKE, clusters with
    the ResourceQuota admission's limitedResources), a namespace may use them only through a quota
    that selects them; elsewhere it only bounds the agent's pods (one per node)."""
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "flexsfc-critical-pods", "namespace": NAMESPACE, "labels": PART_OF},
        "spec": {
            "hard": {"pods": "10k"},
            "scopeSelector": {
                "matchExpressions": [
                    {"operator": "In", "scopeName": "PriorityClass", "values": [CRITICAL_PRIORITY_CLASS]}
                ]
            },
        },
    }


UNINSTALL_NAMESPACE: Final = "flexsfc-uninstall"
UNINSTALL: Final = "flexsfc-node-cleanup"


def uninstall_daemonset() -> dict[str, Any]:
    """Removes what the install put on every node; ready once done there (deploy/uninstall/)."""
    labels = component_labels(UNINSTALL)
    cleanup = image_container(
        "cleanup",
        ["sh", "-c", UNINSTALL_SCRIPT],
        env=[
            env_var("CNI_BIN", CNI_BIN_MOUNT),
            env_var("HOST", "/host"),
            env_var("SOCKET_DIR", SOCKET_DIR),
            env_var("STATE_ROOT", STATE_ROOT),
            env_var("PIN_DIR", DEFAULT_PIN_DIR),
        ],
        volumeMounts=[
            {"name": "cni-bin", "mountPath": CNI_BIN_MOUNT},
            {"name": "cni-socket", "mountPath": f"/host{SOCKET_DIR}"},
            {"name": "state", "mountPath": f"/host{STATE_ROOT}"},
            {"name": "bpffs", "mountPath": "/host/sys/fs/bpf", "mountPropagation": "HostToContainer"},
        ],
        # Unconfined AppArmor: removing pins under /sys/fs/bpf.
        securityContext=restricted(appArmorProfile={"type": "Unconfined"}),
    )
    done = image_container(
        "done",
        ["sleep", "infinity"],
        resources={"requests": {"cpu": "1m", "memory": "8Mi"}, "limits": {"memory": "32Mi"}},
        securityContext=restricted(non_root=True),
    )
    pod_spec = {
        "tolerations": [{"operator": "Exists"}],
        "automountServiceAccountToken": False,
        "initContainers": [cleanup],
        "containers": [done],
        "volumes": [
            _cni_bin_volume(),
            host_path("cni-socket", SOCKET_DIR),
            host_path("state", STATE_ROOT),
            host_path("bpffs", "/sys/fs/bpf"),
        ],
    }
    return workload(
        "DaemonSet",
        UNINSTALL,
        labels,
        pod_spec,
        namespace=UNINSTALL_NAMESPACE,
        annotations={f"{APPARMOR_ANNOTATION}/cleanup": "unconfined"},
    )
