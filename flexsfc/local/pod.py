"""A local pod: a network namespace, its CNI attachments and the container processes inside it.

The lifecycle mirrors the kubelet's: create sandbox (netns, loopback up) -> CNI ADD per network ->
start containers -> readiness -> ... -> preStop -> SIGTERM -> (grace) -> SIGKILL -> CNI DEL -> sandbox
removed. The caller (the replica set) decides when each step happens and tells the agent.
"""

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import NetNS, netns

from flexsfc.agent.types import NfReplica, ReplicaPhase
from flexsfc.local.cni import CniCall, CniError, cni_add, cni_del
from flexsfc.local.podspec import PodSpec
from flexsfc.model.records import AttachmentRecord
from flexsfc.util.netns import netns_path

log = logging.getLogger(__name__)

PROBE_INTERVAL_SECONDS = 0.02  # faster than kubelet's 1 s minimum: the local runtime is one machine


class PodError(RuntimeError):
    pass


# (CNI configuration with stateDir, container id, ifname) -> the record flexsfc-cni wrote, if any
RecordLoader = Callable[[dict[str, Any], str, str], AttachmentRecord | None]


@dataclass
class Attachment:
    """One Multus network selection of the pod: what CNI ADD got, so DEL can send the same."""

    ifname: str
    network: str  # NetworkAttachmentDefinition name
    config: dict[str, Any]
    added: bool = False


@dataclass
class ProcessInfo:
    container: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: tells a reused PID apart


@dataclass
class PodTimes:
    created: float = 0.0
    networked: float = 0.0  # every CNI ADD done
    started: float = 0.0  # container processes started
    running: float = 0.0  # ready
    first_packet: float = 0.0
    terminating: float = 0.0
    drained: float = 0.0
    gone: float = 0.0


@dataclass
class Pod:
    name: str
    uid: str
    namespace: str
    deployment: str
    nf: str
    netns: str
    spec: PodSpec
    attachments: list[Attachment]
    log_path: str
    workdir: str
    phase: ReplicaPhase = ReplicaPhase.PENDING
    reason: str = ""
    records: list[AttachmentRecord] = field(default_factory=list)
    processes: list[ProcessInfo] = field(default_factory=list)
    times: PodTimes = field(default_factory=PodTimes)
    _popen: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @staticmethod
    def new_uid() -> str:
        return str(uuid.uuid4())

    @property
    def container_id(self) -> str:
        return container_id_of(self.uid)

    @property
    def netns_path(self) -> str:
        return netns_path(self.netns)

    def replica(self) -> NfReplica:
        return NfReplica(
            uid=self.uid,
            namespace=self.namespace,
            pod_name=self.name,
            nf=self.nf,
            phase=self.phase,
            interfaces=tuple(self.records),
        )

    # -- sandbox and networks ------------------------------------------------------------------

    def create_sandbox(self) -> None:
        self.times.created = time.time()
        Path(self.workdir).mkdir(parents=True, exist_ok=True)
        netns.create(self.netns)
        with NetNS(self.netns) as ns:
            (lo,) = ns.link_lookup(ifname="lo")
            ns.link("set", index=lo, state="up")

    def add_networks(self, load_record: RecordLoader) -> None:
        """CNI ADD for every network selection, in order. Raises PodError naming the failing one."""
        for att in self.attachments:
            try:
                cni_add(self._cni_call(att))
            except CniError as exc:
                raise PodError(f"pod {self.name}: {exc}") from exc
            att.added = True
            record = load_record(att.config, self.container_id, att.ifname)
            if record is None:
                raise PodError(
                    f"pod {self.name}: CNI ADD for {att.ifname} succeeded but wrote no attachment record "
                    f"in {att.config.get('stateDir')}"
                )
            self.records.append(record)

    def delete_networks(self) -> list[str]:
        """CNI DEL for every attachment that was added (reverse order). Returns errors, raises nothing."""
        errors = []
        for att in reversed(self.attachments):
            if not att.added:
                continue
            try:
                cni_del(self._cni_call(att))
                att.added = False
            except CniError as exc:
                errors.append(f"pod {self.name}: {exc}")
        return errors

    def delete_sandbox(self) -> None:
        remove_sandbox(self.netns)

    def _cni_call(self, att: Attachment) -> CniCall:
        return cni_call(self.uid, self.namespace, self.name, self.netns, att)

    # -- containers ----------------------------------------------------------------------------

    def start_containers(self) -> None:
        with open(self.log_path, "ab", buffering=0) as logf:
            for container in self.spec.containers:
                logf.write(f"--- {time.strftime('%H:%M:%S')} starting container {container.name}\n".encode())
                proc = subprocess.Popen(
                    self._in_netns(container.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    env=self._env(container.env),
                    cwd=self.workdir,
                    start_new_session=True,  # own process group: stop kills the whole container
                )
                self._popen[container.name] = proc
                self.processes.append(ProcessInfo(container.name, proc.pid, process_start_ticks(proc.pid)))

    def exited_container(self) -> str | None:
        """Name and exit status of a container process that ended, if any."""
        for name, proc in self._popen.items():
            code = proc.poll()
            if code is not None:
                return f"container {name} exited with status {code}"
        return None

    def is_ready(self) -> bool:
        for container in self.spec.containers:
            if not container.readiness:
                continue
            result = subprocess.run(
                self._in_netns(container.readiness),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=self._env(container.env),
                cwd=self.workdir,
                timeout=10,
                check=False,
            )
            if result.returncode != 0:
                return False
        return True

    def run_pre_stop(self, deadline: float) -> None:
        with open(self.log_path, "ab", buffering=0) as logf:
            for container in self.spec.containers:
                if not container.pre_stop:
                    continue
                logf.write(f"--- {time.strftime('%H:%M:%S')} preStop {container.name}\n".encode())
                try:
                    subprocess.run(
                        self._in_netns(container.pre_stop),
                        stdin=subprocess.DEVNULL,
                        stdout=logf,
                        stderr=subprocess.STDOUT,
                        env=self._env(container.env),
                        cwd=self.workdir,
                        timeout=max(0.0, deadline - time.monotonic()),
                        start_new_session=True,
                        check=False,
                    )
                except subprocess.TimeoutExpired:
                    logf.write(b"--- preStop hook exceeded terminationGracePeriodSeconds\n")

    def stop_containers(self, deadline: float) -> None:
        """SIGTERM every container's process group, SIGKILL what is left at `deadline`."""
        for info in self.processes:
            signal_group(info, signal.SIGTERM)
        for proc in self._popen.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        for info in self.processes:
            signal_group(info, signal.SIGKILL)
        for proc in self._popen.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._popen.clear()
        self.processes.clear()

    def _in_netns(self, argv: tuple[str, ...]) -> list[str]:
        # nsenter --net (not `ip netns exec`): keeps /sys and bpffs as they are, execs the command.
        return ["nsenter", f"--net={self.netns_path}", "--", *argv]

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOSTNAME": self.name,
            "POD_NAME": self.name,
            "POD_NAMESPACE": self.namespace,
            "POD_UID": self.uid,
            **extra,
        }

    # -- state on disk -------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uid": self.uid,
            "namespace": self.namespace,
            "deployment": self.deployment,
            "nf": self.nf,
            "netns": self.netns,
            "phase": self.phase.value,
            "reason": self.reason,
            "logPath": self.log_path,
            "workdir": self.workdir,
            "attachments": [asdict(a) for a in self.attachments],
            "records": [r.to_json_dict() for r in self.records],
            "processes": [asdict(p) for p in self.processes],
            "times": asdict(self.times),
        }


def process_start_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    return int(stat.rsplit(")", 1)[1].split()[19])


def signal_group(info: ProcessInfo, sig: int) -> None:
    """Signal the container's process group, only if the leader PID is still the process we started."""
    if process_start_ticks(info.pid) != info.start_ticks:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(info.pid, sig)


def kill_processes_in_netns(path: str) -> list[int]:
    """SIGKILL every process still inside the pod's network namespace.

    A pod's processes end with the pod, including those that left the container's process group
    (daemonised servers, `flexsfc exec` sessions); otherwise they would keep the namespace alive.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return []
    target = (st.st_dev, st.st_ino)  # a netns file is an nsfs inode: device and inode identify it
    killed = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry}/ns/net")
            if (ns.st_dev, ns.st_ino) != target:
                continue
            os.kill(int(entry), signal.SIGKILL)
            killed.append(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return killed


def cleanup_pod_state(raw: dict[str, Any]) -> list[str]:
    """Remove what a pod recorded on disk left behind (used by `down` when the supervisor is gone)."""
    errors = []
    for proc in raw.get("processes", []):
        info = ProcessInfo(**proc)
        signal_group(info, signal.SIGKILL)
    for att_raw in reversed(raw.get("attachments", [])):
        att = Attachment(**att_raw)
        if not att.added:
            continue
        try:
            cni_del(cni_call(raw["uid"], raw["namespace"], raw["name"], raw["netns"], att))
        except CniError as exc:
            errors.append(f"pod {raw['name']}: {exc}")
    remove_sandbox(raw["netns"])
    return errors


def container_id_of(uid: str) -> str:
    """The CNI container id of a pod: its UID without dashes."""
    return uid.replace("-", "")


def cni_call(uid: str, namespace: str, pod_name: str, netns_name: str, att: Attachment) -> CniCall:
    """The CNI call of one of a pod's attachments (the same for ADD and DEL, as Multus makes it)."""
    return CniCall(
        container_id=container_id_of(uid),
        netns_path=netns_path(netns_name),
        ifname=att.ifname,
        pod_namespace=namespace,
        pod_name=pod_name,
        pod_uid=uid,
        config=att.config,
    )


def remove_sandbox(netns_name: str) -> None:
    """Kill what still runs in the pod's network namespace, then delete the namespace."""
    path = netns_path(netns_name)
    kill_processes_in_netns(path)
    if os.path.exists(path):
        with contextlib.suppress(FileNotFoundError):
            netns.remove(netns_name)
