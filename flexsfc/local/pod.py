"""A local pod: a network namespace, its CNI attachments and the container processes inside it.

The lifecycle mirrors the kubelet's: create sandbox (netns, loopback up) -> CNI ADD per network ->
start containers -> readiness -> ... -> preStop -> SIGTERM -> (grace) -> SIGKILL -> CNI DEL -> sandbox
removed. The caller (the replica set) decides when each step happens and tells the agent.

A pod can also be adopted (`Pod.adopt`): a new supervisor takes over the pods of one that died,
from the state file. Their container processes are not its children: it watches them through
/proc (PID plus start time, so a reused PID is never taken for the container) instead of waiting
on them.
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pyroute2 import NetNS, netns

from flexsfc.agent.types import NfReplica, ReplicaPhase
from flexsfc.local.cni import CniCall, CniError, cni_add, cni_del
from flexsfc.local.podspec import PodSpec
from flexsfc.local.status import Attachment, PodCounters, PodStatus, PodTimes, ProcessInfo
from flexsfc.model.records import AttachmentRecord
from flexsfc.util.netns import netns_path

log = logging.getLogger(__name__)

PROBE_INTERVAL_SECONDS = 0.02  # faster than kubelet's 1 s minimum: the local runtime is one machine


class PodError(RuntimeError):
    pass


# (CNI configuration with stateDir, container id, ifname) -> the record flexsfc-cni wrote, if any
RecordLoader = Callable[[dict[str, Any], str, str], AttachmentRecord | None]


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
    # Whether this pod's network namespace exists because of it: a namespace of the same name that
    # was there before is never this pod's to remove.
    sandbox: bool = False
    # Taken over from a supervisor that died: its processes are watched through /proc.
    adopted: bool = False
    # The simulated node it runs on (`up --nodes N`) and that node's network namespace, where its
    # CNI calls run; "" with one node.
    node: str = ""
    node_netns: str = ""
    _popen: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @staticmethod
    def new_uid() -> str:
        return str(uuid.uuid4())

    @classmethod
    def adopt(cls, status: PodStatus, spec: PodSpec) -> "Pod":
        """The pod a previous supervisor recorded, taken over as it is (nothing is started)."""
        return cls(
            name=status.name,
            uid=status.uid,
            namespace=status.namespace,
            deployment=status.deployment,
            nf=status.nf,
            netns=status.netns,
            spec=spec,
            attachments=[replace(a, config=dict(a.config)) for a in status.attachments],
            log_path=status.log_path,
            workdir=status.workdir,
            phase=status.phase,
            reason=status.reason,
            records=list(status.records),
            processes=list(status.processes),
            times=replace(status.times),
            sandbox=True,
            adopted=True,
            node=status.node,
        )

    @property
    def container_id(self) -> str:
        return container_id_of(self.uid)

    @property
    def netns_path(self) -> str:
        return netns_path(self.netns)

    def replica(self) -> NfReplica:
        return self.status().replica()

    # -- sandbox and networks ------------------------------------------------------------------

    def create_sandbox(self) -> None:
        self.times.created = time.time()
        Path(self.workdir).mkdir(parents=True, exist_ok=True)
        Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
        if os.path.exists(self.netns_path):
            # Someone else's (another runtime given the same --netns-prefix, a leftover): never join it.
            raise PodError(
                f"pod {self.name}: network namespace {self.netns} exists already; another runtime may "
                "use the same --netns-prefix, or `ip netns del` a leftover"
            )
        netns.create(self.netns)
        self.sandbox = True
        with NetNS(self.netns) as ns:
            (lo,) = ns.link_lookup(ifname="lo")
            ns.link("set", index=lo, state="up")

    def add_networks(self, load_record: RecordLoader, node_file: str) -> None:
        """CNI ADD for every network selection, in order, through the shim to the agent `node_file`
        names. Raises PodError naming the failing one."""
        for att in self.attachments:
            try:
                cni_add(self._cni_call(att), node_file)
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

    def delete_networks(self, node_file: str) -> list[str]:
        """CNI DEL for every attachment that was added (reverse order), through the shim. Returns
        errors, raises nothing."""
        errors = []
        for att in reversed(self.attachments):
            if not att.added:
                continue
            try:
                cni_del(self._cni_call(att), node_file)
                att.added = False
            except CniError as exc:
                errors.append(f"pod {self.name}: {exc}")
        return errors

    def delete_sandbox(self) -> None:
        if self.sandbox:
            remove_sandbox(self.netns)

    def _cni_call(self, att: Attachment) -> CniCall:
        return cni_call(self.uid, self.namespace, self.name, self.netns, att, self.node_netns)

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
        for info in self._adopted():
            if not process_alive(info):
                return f"container {info.container} exited (started by an earlier supervisor: status unknown)"
        return None

    def _adopted(self) -> list[ProcessInfo]:
        """Container processes an earlier supervisor started: not children of this process."""
        if not self.adopted:
            return []
        return [info for info in self.processes if info.container not in self._popen]

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
        adopted = self._adopted()
        for info in self.processes:
            signal_group(info, signal.SIGTERM)
        for proc in self._popen.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        wait_gone(adopted, deadline)
        for info in self.processes:
            signal_group(info, signal.SIGKILL)
        for proc in self._popen.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        wait_gone(adopted, time.monotonic() + 5)
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

    def status(self, counters: PodCounters | None = None) -> PodStatus:
        """A snapshot: later changes of the pod do not show in it."""
        return PodStatus(
            name=self.name,
            uid=self.uid,
            namespace=self.namespace,
            deployment=self.deployment,
            nf=self.nf,
            netns=self.netns,
            phase=self.phase,
            reason=self.reason,
            log_path=self.log_path,
            workdir=self.workdir,
            attachments=tuple(replace(a, config=dict(a.config)) for a in self.attachments),
            records=tuple(self.records),
            processes=tuple(self.processes),
            times=replace(self.times),
            counters=counters,
            node=self.node,
        )


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 (state) on; [] when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return []
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    return stat.rsplit(")", 1)[1].split()


def process_start_ticks(pid: int) -> int:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else 0


def process_alive(info: ProcessInfo) -> bool:
    """Whether the process we started still runs: same PID and start time, and not a zombie."""
    fields = _stat_fields(info.pid)
    return bool(fields) and fields[0] != "Z" and int(fields[19]) == info.start_ticks


def wait_gone(processes: list[ProcessInfo], deadline: float) -> None:
    """Poll until none of `processes` runs any more, or `deadline` (monotonic) passes."""
    while any(process_alive(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.02)


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


def cleanup_pod_state(pod: PodStatus, node_file: str) -> list[str]:
    """Remove what a pod recorded on disk left behind (orphans; `down` when the supervisor is gone).
    CNI DEL goes through the shim to the agent `node_file` names, which must be serving."""
    errors = []
    for info in pod.processes:
        signal_group(info, signal.SIGKILL)
    for att in reversed(pod.attachments):
        if not att.added:
            continue
        try:
            cni_del(cni_call(pod.uid, pod.namespace, pod.name, pod.netns, att), node_file)
        except CniError as exc:
            errors.append(f"pod {pod.name}: {exc}")
    remove_sandbox(pod.netns)
    return errors


def container_id_of(uid: str) -> str:
    """The CNI container id of a pod: its UID without dashes."""
    return uid.replace("-", "")


def cni_call(
    uid: str, namespace: str, pod_name: str, netns_name: str, att: Attachment, node_netns: str = ""
) -> CniCall:
    """The CNI call of one of a pod's attachments (the same for ADD and DEL, as Multus makes it);
    run inside `node_netns` (the pod's simulated node) when given."""
    return CniCall(
        container_id=container_id_of(uid),
        netns_path=netns_path(netns_name),
        ifname=att.ifname,
        pod_namespace=namespace,
        pod_name=pod_name,
        pod_uid=uid,
        config=att.config,
        node_netns=node_netns,
    )


def remove_sandbox(netns_name: str) -> None:
    """Kill what still runs in the pod's network namespace, then delete the namespace."""
    path = netns_path(netns_name)
    kill_processes_in_netns(path)
    if os.path.exists(path):
        with contextlib.suppress(FileNotFoundError):
            netns.remove(netns_name)
